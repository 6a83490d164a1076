// Internal mappings (os::map / os::unmap): given back ones are kept for the
// next map of about their size, zeroed; the one kept longest ago makes room;
// big ones are not kept.
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <vector>

#include "os.hpp"

using namespace zmm;

namespace {
constexpr size_t k_page = 4096;
}

BOOST_AUTO_TEST_SUITE(os_internal)

BOOST_AUTO_TEST_CASE(a_mapping_given_back_is_taken_again_zeroed) {
    const size_t bytes = 77 * k_page;  // a size nothing else here uses
    auto* p = static_cast<unsigned char*>(os::map(bytes));
    BOOST_TEST_REQUIRE(p != nullptr);
    memset(p, 0xab, bytes);
    os::unmap(p, bytes);
    BOOST_TEST(os::is_mapped(p));  // kept
    auto* q = static_cast<unsigned char*>(os::map(bytes - 100));
    BOOST_TEST_REQUIRE(q == p);
    for (size_t i = 0; i < bytes - 100; ++i) BOOST_TEST_REQUIRE(q[i] == 0);
    os::unmap(q, bytes - 100);
    // Up to twice the pages asked for: a kept 77-page mapping serves 40
    // pages; given back, it is kept whole (its own length, not the 40).
    auto* r = static_cast<unsigned char*>(os::map(40 * k_page));
    BOOST_TEST_REQUIRE(r == p);
    os::unmap(r, 40 * k_page);
    auto* s = static_cast<unsigned char*>(os::map(bytes));
    BOOST_TEST_REQUIRE(s == p);
    os::unmap(s, bytes);
    // Less than half of it: a fresh mapping.
    void* t = os::map(20 * k_page);
    BOOST_TEST(t != static_cast<void*>(p));
    os::unmap(t, 20 * k_page);
}

BOOST_AUTO_TEST_CASE(the_oldest_makes_room_and_big_ones_are_unmapped) {
    std::vector<void*> ps;
    for (size_t i = 0; i < 12; ++i) ps.push_back(os::map((101 + i) * k_page));
    for (size_t i = 0; i < 12; ++i) os::unmap(ps[i], (101 + i) * k_page);
    // Eight slots: the four given back first are gone, the last eight kept.
    for (size_t i = 0; i < 4; ++i) BOOST_TEST(!os::is_mapped(ps[i]));
    for (size_t i = 4; i < 12; ++i) BOOST_TEST(os::is_mapped(ps[i]));
    void* big = os::map(2 << 20);
    BOOST_TEST_REQUIRE(big != nullptr);
    os::unmap(big, 2 << 20);
    BOOST_TEST(!os::is_mapped(big));
    for (size_t i = 4; i < 12; ++i) os::unmap(os::map((101 + i) * k_page), (101 + i) * k_page);
}

// Every internal mapping is listed for the leak scan (which must not read
// zmm's own memory as the program's), however many there are; one given
// back and unmapped is not.
BOOST_AUTO_TEST_CASE(every_internal_mapping_is_listed) {
    auto listed = [](const void* p) {
        struct Find {
            uintptr_t a;
            bool found;
        } f{reinterpret_cast<uintptr_t>(p), false};
        os::for_each_internal(
            [](void* ctx, uintptr_t lo, uintptr_t hi) {
                auto* f = static_cast<Find*>(ctx);
                if (f->a >= lo && f->a < hi) f->found = true;
            },
            &f);
        return f.found;
    };
    std::vector<void*> ps;
    for (int i = 0; i < 300; ++i) ps.push_back(os::map(2 << 20));  // too big to be kept: unmapped when given back
    for (void* p : ps) {
        BOOST_TEST_REQUIRE(p != nullptr);
        BOOST_TEST(listed(p));
    }
    for (void* p : ps) os::unmap(p, 2 << 20);
    for (void* p : ps) BOOST_TEST(!listed(p));
    void* again = os::map(2 << 20);  // a slot freed above is taken again
    BOOST_TEST(listed(again));
    os::unmap(again, 2 << 20);
    BOOST_TEST(!os::internal_overflowed());
}

BOOST_AUTO_TEST_SUITE_END()
