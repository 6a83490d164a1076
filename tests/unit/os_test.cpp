// Internal mappings (os::map / os::unmap): given back ones are kept for the
// next map of about their size, zeroed; the one kept longest ago makes room;
// big ones are not kept.
#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <csignal>
#include <thread>
#include <unistd.h>
#include <vector>

#include "os.hpp"

using namespace zmm;

namespace {
constexpr size_t k_page = 4096;

// The kept slots, filled with mappings of 200 pages, which none of the
// sizes the tests use takes: what earlier tests left kept is gone.
void empty_kept_slots() {
    void* fill[8];
    for (auto& f : fill) f = os::map(200 * k_page);
    for (auto& f : fill) os::unmap(f, 200 * k_page);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(os_internal)

BOOST_AUTO_TEST_CASE(a_mapping_given_back_is_taken_again_zeroed) {
    empty_kept_slots();
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

// map_unzeroed takes a kept mapping as it was left (its callers write
// before they read: zeroing would be time lost); map() still zeroes it.
BOOST_AUTO_TEST_CASE(an_unzeroed_map_takes_a_kept_mapping_as_it_was) {
    empty_kept_slots();
    const size_t bytes = 53 * k_page;  // a size nothing else here uses
    auto* p = static_cast<unsigned char*>(os::map_unzeroed(bytes));
    BOOST_TEST_REQUIRE(p != nullptr);
    memset(p, 0xcd, bytes);
    os::unmap(p, bytes);
    auto* q = static_cast<unsigned char*>(os::map_unzeroed(bytes));
    BOOST_TEST_REQUIRE(q == p);
    BOOST_TEST(q[0] == 0xcd);
    BOOST_TEST(q[bytes - 1] == 0xcd);
    os::unmap(q, bytes);
    auto* r = static_cast<unsigned char*>(os::map(bytes));
    BOOST_TEST_REQUIRE(r == p);
    for (size_t i = 0; i < bytes; ++i) BOOST_TEST_REQUIRE(r[i] == 0);
    os::unmap(r, bytes);
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

// The descriptors zmm keeps stay out of 0-2: a library's descriptors opened
// while the standard ones are held land past 2, the held ones are given
// back, and one a thread of the program's put on that number meanwhile is
// left alone. (fd 0 of the test process is closed for the test and put
// back after.)
BOOST_AUTO_TEST_SUITE(os_descriptors)

BOOST_AUTO_TEST_CASE(standard_descriptors_are_held_then_given_back) {
    const int saved_stdin = dup(0);
    BOOST_REQUIRE(saved_stdin > 2);
    BOOST_REQUIRE(close(0) == 0);
    int p[2] = {-1, -1};
    {
        errno = EILSEQ;
        os::Standard_descriptors_held held;
        BOOST_TEST(errno == EILSEQ);
        BOOST_REQUIRE(pipe2(p, O_CLOEXEC) == 0);
        BOOST_TEST((p[0] > 2 && p[1] > 2));
    }
    int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
    BOOST_TEST(lowest == 0);  // given back
    close(lowest);
    // Replaced meanwhile (a pipe dup2'd onto 0): not closed.
    {
        os::Standard_descriptors_held held;
        BOOST_REQUIRE(dup2(p[0], 0) == 0);
    }
    struct stat st{};
    BOOST_TEST((fstat(0, &st) == 0 && S_ISFIFO(st.st_mode)));
    close(p[0]);
    close(p[1]);
    BOOST_REQUIRE(dup2(saved_stdin, 0) == 0);
    close(saved_stdin);
}

BOOST_AUTO_TEST_CASE(a_kept_descriptor_is_moved_out_of_the_way_and_errno_kept) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    BOOST_REQUIRE(fd >= 0);
    errno = EILSEQ;
    int moved = os::move_out_of_the_way(fd);
    BOOST_TEST(errno == EILSEQ);
    struct rlimit nofile{};
    BOOST_REQUIRE(getrlimit(RLIMIT_NOFILE, &nofile) == 0);
    BOOST_TEST(moved > 2);
    if (nofile.rlim_cur > 600) BOOST_TEST(moved >= 600);
    BOOST_TEST(fcntl(fd, F_GETFD) == -1);  // the old number is closed
    BOOST_TEST((fcntl(moved, F_GETFD) & FD_CLOEXEC) != 0);
    close(moved);
    {
        errno = EDOM;
        os::Errno_keeper keep;
        errno = ENOENT;
    }
    BOOST_TEST(errno == EDOM);
}

BOOST_AUTO_TEST_SUITE_END()

// The pid and tid zmm keeps (os::process_id, os::thread_id) are read again
// in a child: after fork(), and after a raw clone that runs no atfork
// handler (the page holding the pid comes zeroed, MADV_WIPEONFORK). Without
// the wipe the child would name its parent, and take the parent's kept
// /proc/self/maps descriptor for its own.
BOOST_AUTO_TEST_SUITE(os_ids)

// In a child: 0 when its ids are its own (only system calls: a raw clone's
// child has no glibc state to trust).
int check_ids_in_child() {
    const long pid = syscall(SYS_getpid), tid = syscall(SYS_gettid);
    if (zmm::os::process_id() != pid) return 1;
    if (zmm::os::thread_id() != tid) return 2;
    return 0;
}

int wait_status(pid_t child) {
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

BOOST_AUTO_TEST_CASE(ids_are_the_callers_and_a_childs_own) {
    BOOST_TEST(zmm::os::process_id() == getpid());
    BOOST_TEST(zmm::os::thread_id() == static_cast<int>(syscall(SYS_gettid)));
    BOOST_TEST(zmm::os::process_id() == getpid());  // the kept one

    const pid_t forked = fork();
    BOOST_TEST_REQUIRE(forked >= 0);
    if (forked == 0) _exit(check_ids_in_child());
    BOOST_TEST(wait_status(forked) == 0);

    const long cloned = syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, nullptr);
    BOOST_TEST_REQUIRE(cloned >= 0);
    if (cloned == 0) syscall(SYS_exit_group, check_ids_in_child());
    BOOST_TEST(wait_status(static_cast<pid_t>(cloned)) == 0);
    BOOST_TEST(zmm::os::process_id() == getpid());
}

BOOST_AUTO_TEST_CASE(each_thread_has_its_own_tid) {
    int seen = 0;
    std::thread t([&] { seen = zmm::os::thread_id(); });
    t.join();
    BOOST_TEST(seen != 0);
    BOOST_TEST(seen != zmm::os::thread_id());
    BOOST_TEST(zmm::os::thread_id() == static_cast<int>(syscall(SYS_gettid)));
}

BOOST_AUTO_TEST_SUITE_END()
