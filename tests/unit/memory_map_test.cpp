// Reading /proc/self/maps: every line, whatever the reads cut, and the kinds
// the leak scan needs (anonymous, scannable, readable).
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "memory_map.hpp"

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

BOOST_AUTO_TEST_SUITE_END()
