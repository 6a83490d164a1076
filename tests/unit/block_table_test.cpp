// The table of a traced request's blocks against a std::map: inserts,
// replacements, erases (backward shift across probe runs that wrap around
// the end), finds, growth, clear, and the walks, which go by the slots'
// occupancy bits.
#include <boost/test/unit_test.hpp>

#include <map>
#include <vector>

#include "block_table.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Rng;

namespace {

void check_same(const Block_table& t, const std::map<uintptr_t, Block_info>& model) {
    BOOST_TEST_REQUIRE(t.size() == model.size());
    size_t walked = 0;
    bool all_known = true;
    t.for_each([&](const Block_info& b) {
        ++walked;
        auto it = model.find(b.address);
        all_known &= it != model.end() && it->second.size == b.size && it->second.stack == b.stack;
    });
    BOOST_TEST(walked == model.size());
    BOOST_TEST(all_known);
    for (const auto& [a, b] : model) {
        const Block_info* f = t.find(a);
        BOOST_TEST_REQUIRE(f != nullptr);
        BOOST_TEST(f->size == b.size);
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(block_table)

BOOST_AUTO_TEST_CASE(agrees_with_a_map) {
    Block_table t;
    std::map<uintptr_t, Block_info> model;
    Rng rng(17);
    // Addresses from a small range: runs of colliding and neighbouring
    // homes, wrapping around the table's end.
    for (int round = 0; round < 6; ++round) {
        const size_t ops = round < 3 ? 20000 : 3000;
        for (size_t i = 0; i < ops; ++i) {
            const uintptr_t a = 0x7f0000000000u + 16 * (1 + rng.below(round < 3 ? 12000 : 400));
            if (rng.below(3) != 0) {
                Block_info b{a, 1 + rng.below(5000), static_cast<uint32_t>(rng.below(100)), 0};
                BOOST_TEST_REQUIRE(t.insert(b));
                model[a] = b;
            } else {
                Block_info was{};
                const bool there = t.erase(a, &was);
                BOOST_TEST_REQUIRE(there == (model.count(a) == 1));
                if (there) {
                    BOOST_TEST(was.size == model[a].size);
                    model.erase(a);
                }
                BOOST_TEST(t.find(a) == nullptr);
            }
        }
        check_same(t, model);
        if (round == 3) {  // emptied by erases, then refilled
            for (auto it = model.begin(); it != model.end();) {
                BOOST_TEST_REQUIRE(t.erase(it->first));
                it = model.erase(it);
            }
            check_same(t, model);
        }
    }
    t.for_each_mutable([](Block_info& b) { b.flags = k_block_reported; });
    bool all = true;
    t.for_each([&](const Block_info& b) { all &= b.flags == k_block_reported; });
    BOOST_TEST(all);
    t.clear();
    model.clear();
    check_same(t, model);
    BOOST_TEST(t.find(0x7f0000000010u) == nullptr);
    // After clear, as new; after release too.
    for (int pass = 0; pass < 2; ++pass) {
        for (uintptr_t a = 16; a < 16 * 5000; a += 16) {
            Block_info b{a, a, 0, 0};
            BOOST_TEST_REQUIRE(t.insert(b));
            model[a] = b;
        }
        check_same(t, model);
        t.release();
        model.clear();
        check_same(t, model);
        BOOST_TEST(!t.erase(16));
    }
}

BOOST_AUTO_TEST_SUITE_END()
