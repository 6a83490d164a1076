// Reading /proc/self/maps: every line, whatever the reads cut (os::
// for_each_line), the kinds the leak scan needs (anonymous, scannable,
// readable), and the mapping of an address (os::mapping_of).
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "memory_map.hpp"
#include "os.hpp"

using namespace zmm::memory_map;

namespace {

// A descriptor reading `text` from its start (a memory file: reads of up to
// the reader's buffer, cutting lines anywhere).
int file_with(const std::string& text) {
    int fd = memfd_create("maps", MFD_CLOEXEC);
    BOOST_REQUIRE(fd >= 0);
    BOOST_REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    BOOST_REQUIRE(lseek(fd, 0, SEEK_SET) == 0);
    return fd;
}

// The process's mappings both ways, one right after the other, through fd
// (an open /proc/self/maps): the kernel's writable ones (`queried`, the
// query's answer returned) and the file's every one (`all`, BOOST_TESTed).
// Room is made in both lists first: growing either would map memory between
// the two reads.
Query read_both_ways(int fd, Ranges& queried, Ranges& all) {
    for (int i = 0; i < 2000; ++i) BOOST_REQUIRE((queried.push(Range{}) && all.push(Range{})));
    queried.count = all.count = 0;
    Query q = query_writable(fd, queried);
    BOOST_TEST(read_maps(fd, all));
    return q;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(memory_map)

BOOST_AUTO_TEST_CASE(every_line_whatever_the_reads_cut) {
    std::string text;
    const std::string long_path = "/opt/" + std::string(3000, 'x') + "/lib.so";
    for (unsigned i = 0; i < 400; ++i) {
        char line[128];
        snprintf(line, sizeof line, "%x000-%x000 %s %08x 08:01 %u", 0x1000 + 2 * i, 0x1001 + 2 * i,
                 i % 3 == 0 ? "rw-p" : i % 3 == 1 ? "r-xp" : "rw-s", i, i % 2 ? 0 : 4242 + i);
        text += line;
        if (i % 2 == 0) text += i % 10 == 0 ? "                   " + long_path : "   /usr/lib/x.so";
        if (i == 7) text += "   [stack]";
        if (i == 9) text += "   /dev/zero (deleted)";
        text += "\n";
    }
    text += "7fff0000-7fff1000 rw-p 00000000 00:00 0";  // the last line, no newline
    int fd = file_with(text);
    Ranges r;
    BOOST_TEST(read_maps(fd, r));
    close(fd);
    BOOST_REQUIRE_EQUAL(r.count, 401u);
    for (unsigned i = 0; i < 400; ++i) {
        const Range& m = r.items[i];
        BOOST_TEST_CONTEXT("line " << i) {
            BOOST_TEST(m.lo == (0x1000u + 2 * i) * 0x1000u);
            BOOST_TEST(m.hi == (0x1001u + 2 * i) * 0x1000u);
            BOOST_TEST(m.anonymous == (i % 2 == 1));
            BOOST_TEST(m.scannable == (i % 3 == 0 && i != 9));
            BOOST_TEST(m.readable);
        }
    }
    BOOST_TEST(r.items[400].lo == 0x7fff0000u);
    BOOST_TEST((r.items[400].anonymous && r.items[400].scannable));
}

// A path can be longer than PATH_MAX (a file opened in a deep directory):
// the line's start is what matters.
BOOST_AUTO_TEST_CASE(a_line_longer_than_the_buffer_is_read_by_its_start) {
    std::string deep;
    for (int i = 0; i < 1500; ++i) deep += "/dir" + std::to_string(i);
    int fd = file_with("1000-2000 rw-p 00000000 08:01 77   " + deep + "/f\n3000-4000 rw-p 00000000 00:00 0\n");
    Ranges r;
    BOOST_TEST(read_maps(fd, r));
    close(fd);
    BOOST_REQUIRE_EQUAL(r.count, 2u);
    BOOST_TEST((r.items[0].lo == 0x1000u && r.items[0].hi == 0x2000u && !r.items[0].anonymous && r.items[0].scannable));
    BOOST_TEST((r.items[1].lo == 0x3000u && r.items[1].anonymous));
}

BOOST_AUTO_TEST_CASE(malformed_lines_are_skipped) {
    int fd = file_with("garbage\n1000-2000 rw-p\n3000-4000 ---p 00000000 00:00 0\n\n");
    Ranges r;
    BOOST_TEST(read_maps(fd, r));
    close(fd);
    BOOST_REQUIRE_EQUAL(r.count, 1u);
    BOOST_TEST((r.items[0].lo == 0x3000u && !r.items[0].readable && !r.items[0].scannable));
}

BOOST_AUTO_TEST_CASE(the_process_own_stack_and_data_are_there) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    BOOST_REQUIRE(fd >= 0);
    Ranges r;
    BOOST_TEST(read_maps(fd, r));
    close(fd);
    int local = 0;
    static int data = 0;
    const Range* s = r.containing(reinterpret_cast<uintptr_t>(&local));
    const Range* d = r.containing(reinterpret_cast<uintptr_t>(&data));
    BOOST_TEST((s && s->scannable && s->anonymous));
    BOOST_TEST((d && d->scannable));
}

BOOST_AUTO_TEST_CASE(lines_are_read_whole_and_the_reader_may_stop) {
    std::string text;
    for (unsigned i = 0; i < 3000; ++i) text += std::to_string(i) + std::string(i % 7, ' ') + "\n";
    text += "last";
    auto lines = [](const std::string& t, size_t stop_after) {
        struct Got {
            std::vector<std::string> lines;
            size_t stop_after;
        } got{{}, stop_after};
        int fd = file_with(t);
        bool whole = zmm::os::for_each_line(
            fd,
            [](const char* line, const char* end, void* ctx) {
                auto* g = static_cast<Got*>(ctx);
                g->lines.emplace_back(line, end);
                return g->lines.size() < g->stop_after;
            },
            &got);
        close(fd);
        return std::pair{whole, got.lines};
    };
    auto [whole, all] = lines(text, SIZE_MAX);
    BOOST_TEST(whole);
    BOOST_REQUIRE_EQUAL(all.size(), 3001u);
    for (unsigned i = 0; i < 3000; ++i) BOOST_TEST(all[i] == std::to_string(i) + std::string(i % 7, ' '));
    BOOST_TEST(all[3000] == "last");
    auto [stopped, some] = lines(text, 10);
    BOOST_TEST(!stopped);
    BOOST_TEST(some.size() == 10u);
    // A line longer than the buffer: its start, then the next line.
    auto [long_ok, cut] = lines(std::string(20000, 'x') + "\nnext\n", SIZE_MAX);
    BOOST_TEST(long_ok);
    BOOST_REQUIRE_EQUAL(cut.size(), 2u);
    BOOST_TEST(cut[0] == std::string(8192, 'x'));
    BOOST_TEST(cut[1] == "next");
    auto [empty_ok, nothing] = lines("", SIZE_MAX);
    BOOST_TEST((empty_ok && nothing.empty()));
}

BOOST_AUTO_TEST_CASE(the_mapping_of_an_address_and_its_file) {
    static int in_data = 1;
    uintptr_t lo = 0, hi = 0;
    char path[512];
    BOOST_REQUIRE(zmm::os::mapping_of(reinterpret_cast<uintptr_t>(&in_data), &lo, &hi, path, sizeof path));
    BOOST_TEST((lo <= reinterpret_cast<uintptr_t>(&in_data) && reinterpret_cast<uintptr_t>(&in_data) < hi));
    std::string file = path;
    BOOST_TEST(file.size() > 10);
    BOOST_TEST(file.substr(file.size() - 10) == "unit_tests");
    void* anon = mmap(nullptr, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    BOOST_REQUIRE(anon != MAP_FAILED);
    char small[4];
    BOOST_REQUIRE(zmm::os::mapping_of(reinterpret_cast<uintptr_t>(anon) + 4096, &lo, &hi, small, sizeof small));
    BOOST_TEST((lo <= reinterpret_cast<uintptr_t>(anon) && hi >= reinterpret_cast<uintptr_t>(anon) + 3 * 4096));
    BOOST_TEST(small[0] == 0);
    munmap(anon, 3 * 4096);
    BOOST_TEST(!zmm::os::mapping_of(8, &lo, &hi, nullptr, 0));
}

// The kernel's answer (PROCMAP_QUERY) is the file's writable lines, with
// the same kinds; a kernel without it says so and adds nothing.
BOOST_AUTO_TEST_CASE(the_kernel_query_lists_the_writable_mappings_of_the_file) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    BOOST_REQUIRE(fd >= 0);
    Ranges queried, all;
    Query q = read_both_ways(fd, queried, all);
    close(fd);
    if (q == Query::unsupported) {
        BOOST_TEST_MESSAGE("this kernel has no PROCMAP_QUERY");
        BOOST_TEST((queried.count == 0u && !queried.writable_only));
        return;
    }
    BOOST_REQUIRE(q == Query::done);
    BOOST_TEST(queried.writable_only);
    std::vector<Range> writable;
    for (size_t i = 0; i < all.count; ++i)
        if (all.items[i].writable) writable.push_back(all.items[i]);
    BOOST_REQUIRE_EQUAL(queried.count, writable.size());
    BOOST_TEST(writable.size() >= 3u);  // the stack, the heap's, the test's data at least
    for (size_t i = 0; i < writable.size(); ++i) {
        const Range &a = queried.items[i], &b = writable[i];
        BOOST_TEST_CONTEXT("mapping " << i) {
            BOOST_TEST((a.lo == b.lo && a.hi == b.hi));
            BOOST_TEST(a.anonymous == b.anonymous);
            BOOST_TEST(a.scannable == b.scannable);
            BOOST_TEST(a.readable == b.readable);
            BOOST_TEST(a.writable);
        }
    }
    int local = 0;
    const Range* s = queried.containing(reinterpret_cast<uintptr_t>(&local));
    BOOST_TEST((s && s->scannable && s->anonymous));
}

// A thread stack's guard: an inaccessible page right below the mapping,
// whether the list has every mapping or only the writable ones.
BOOST_AUTO_TEST_CASE(a_guard_page_below_a_mapping_is_seen_with_either_list) {
    auto* p = static_cast<char*>(mmap(nullptr, 6 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    BOOST_REQUIRE(p != MAP_FAILED);
    // [p, +1 page) guard, [+1, +3) guarded; +3 unmapped, [+4, +6) unguarded.
    BOOST_REQUIRE(mprotect(p + 4096, 2 * 4096, PROT_READ | PROT_WRITE) == 0);
    BOOST_REQUIRE(munmap(p + 3 * 4096, 4096) == 0);
    BOOST_REQUIRE(mprotect(p + 4 * 4096, 2 * 4096, PROT_READ | PROT_WRITE) == 0);
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    BOOST_REQUIRE(fd >= 0);
    Ranges queried, all;
    Query q = read_both_ways(fd, queried, all);
    auto guarded = [&](const Ranges& r, const char* a) {
        const Range* m = r.containing(reinterpret_cast<uintptr_t>(a));
        BOOST_REQUIRE(m);
        return guarded_below(fd, r, *m);
    };
    BOOST_TEST(guarded(all, p + 4096));
    BOOST_TEST(!guarded(all, p + 4 * 4096));
    if (q == Query::done) {
        BOOST_TEST(guarded(queried, p + 4096));
        BOOST_TEST(!guarded(queried, p + 4 * 4096));
    }
    close(fd);
    munmap(p, 3 * 4096);
    munmap(p + 4 * 4096, 2 * 4096);
}

BOOST_AUTO_TEST_SUITE_END()
