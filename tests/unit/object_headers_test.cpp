// object_headers::find (no loader lock) against dl_iterate_phdr: for an
// address in each executable segment of every loaded object, the same
// program headers, load address and name; nothing for addresses outside.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <cstring>
#include <link.h>
#include <string>
#include <sys/mman.h>
#include <vector>

#include "object_headers.hpp"

using namespace zmm;

namespace {

struct Seen {
    uintptr_t address;  // in an executable segment
    const ElfW(Phdr)* phdr;
    int phnum;
    uintptr_t bias;
    std::string name;
    uintptr_t eh_frame;
};

int collect(dl_phdr_info* info, size_t, void* data) {
    auto* out = static_cast<std::vector<Seen>*>(data);
    uintptr_t eh_frame = 0;
    for (int i = 0; i < info->dlpi_phnum; ++i)
        if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME) eh_frame = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X) || ph.p_memsz == 0) continue;
        // The segment's middle.
        out->push_back({info->dlpi_addr + ph.p_vaddr + ph.p_memsz / 2, info->dlpi_phdr, info->dlpi_phnum,
                        info->dlpi_addr, info->dlpi_name ? info->dlpi_name : "", eh_frame});
    }
    return 0;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(object_headers_suite)

BOOST_AUTO_TEST_CASE(finds_what_dl_iterate_phdr_lists) {
    std::vector<Seen> all;
    dl_iterate_phdr(collect, &all);
    BOOST_REQUIRE_GE(all.size(), 3u);  // the test, libc, the loader at least
    unsigned found = 0;
    for (const Seen& s : all) {
        object_headers::Object o{};
        const object_headers::Found f = object_headers::find(s.address, o);
        if (s.name.find("linux-vdso") != std::string::npos) continue;  // (either answer)
        BOOST_TEST_CONTEXT(s.name << " at " << std::hex << s.address) {
            BOOST_TEST((f == object_headers::Found::yes));
            if (f != object_headers::Found::yes) continue;
            ++found;
            BOOST_TEST(o.phnum == s.phnum);
            BOOST_TEST(o.bias == s.bias);
            BOOST_TEST(o.eh_frame == s.eh_frame);
            BOOST_TEST(std::memcmp(o.phdr, s.phdr, sizeof(ElfW(Phdr)) * static_cast<size_t>(s.phnum)) == 0);
            // The loader names the program "" and others by path (dlpi_name
            // is l_name).
            BOOST_TEST(std::string(o.name) == s.name);
            BOOST_TEST(o.map != nullptr);
        }
    }
    BOOST_TEST(found >= 3u);
}

BOOST_AUTO_TEST_CASE(nothing_outside_every_object) {
    object_headers::Object o{};
    int on_stack = 0;
    BOOST_TEST((object_headers::find(reinterpret_cast<uintptr_t>(&on_stack), o) == object_headers::Found::none));
    void* anon = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    BOOST_REQUIRE(anon != MAP_FAILED);
    BOOST_TEST((object_headers::find(reinterpret_cast<uintptr_t>(anon), o) == object_headers::Found::none));
    munmap(anon, 4096);
    BOOST_TEST((object_headers::find(0, o) == object_headers::Found::none));
    BOOST_TEST((object_headers::find(UINTPTR_MAX - 4096, o) == object_headers::Found::none));
}

BOOST_AUTO_TEST_SUITE_END()
