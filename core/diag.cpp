#include "diag.hpp"

#include <atomic>
#include <cstdlib>
#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include "format.hpp"
#include "os.hpp"

namespace zmm {
namespace {
Abort_hook g_hook = nullptr;
char g_report_path[256];  // "" for stderr

const char* describe(Misuse kind) {
    switch (kind) {
    case Misuse::double_free: return "double free of ";
    case Misuse::unknown_pointer: return "free of unknown pointer ";
    case Misuse::interior_pointer: return "free of interior pointer ";
    case Misuse::heap_corrupted: return "heap corrupted: overwritten free-list link at ";
    case Misuse::size_mismatch: return "sized delete with a wrong size for ";
    case Misuse::overflow: return "heap buffer overflow past the end of ";
    case Misuse::write_after_free: return "write after free to ";
    }
    return "misuse of ";
}

std::atomic<bool> g_open_failed{false}, g_write_failed{false};

const char* errno_name(int e) {
    switch (e) {
    case ENOENT: return "ENOENT: no such directory";
    case EACCES: return "EACCES: permission denied";
    case EISDIR: return "EISDIR: a directory";
    case ENOTDIR: return "ENOTDIR: a path through a file";
    case ENXIO: return "ENXIO: a FIFO nobody reads, or a socket";
    case EROFS: return "EROFS: a read-only file system";
    case ENOSPC: return "ENOSPC: no space left";
    case EDQUOT: return "EDQUOT: over quota";
    case EIO: return "EIO: an I/O error";
    case EFBIG: return "EFBIG: the file is too large";
    case EPIPE: return "EPIPE: nobody reads it any more";
    case EMFILE: return "EMFILE: no descriptor left";
    case ELOOP: return "ELOOP: too many symbolic links";
    default: return "an error";
    }
}

// Is `path` what descriptor 2 is (a socket cannot be opened: ENXIO)?
bool is_stderr(const char* path) {
    struct stat a, b;
    return stat(path, &a) == 0 && fstat(2, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// One line on stderr, the first time only (`flag`): "<what><path> (<errno>);
// <then>" — written straight to fd 2 (the report file is what failed).
void warn_once(std::atomic<bool>& flag, const char* what, const char* path, int error, const char* then) {
    if (flag.exchange(true, std::memory_order_relaxed)) return;
    Text t;
    t.str("zmm: warning: ").str(what).str(path).str(" (").str(errno_name(error)).str("); ").str(then).chr('\n');
    os::write_all(2, t.data(), t.size());
}

[[noreturn]] void die() {
    // abort() may be intercepted; make sure we never return into a broken heap.
    abort();
    _Exit(134);
}
}  // namespace

void set_abort_hook(Abort_hook hook) { g_hook = hook; }
void set_report_path(const char* pattern) {
    size_t n = 0;
    if (pattern)
        for (; pattern[n] && n + 1 < sizeof g_report_path; ++n) g_report_path[n] = pattern[n];
    g_report_path[n] = 0;
}

int report_open() {
    // (A log that failed a write once is not trusted again: /dev/full.)
    if (!g_report_path[0] || g_write_failed.load(std::memory_order_relaxed)) return 2;
    char path[320];
    size_t o = 0;
    for (const char* p = g_report_path; *p && o + 12 < sizeof path; ++p) {
        if (p[0] == '%' && p[1] == 'p') {
            char digits[12];
            int d = 0;
            unsigned v = static_cast<unsigned>(os::process_id());
            do digits[d++] = static_cast<char>('0' + v % 10);
            while (v /= 10);
            while (d) path[o++] = digits[--d];
            ++p;
        } else {
            path[o++] = *p;
        }
    }
    path[o] = 0;
    int saved = errno;
    // Not blocking: a FIFO without a reader fails (ENXIO) instead of
    // holding the report, and the process's exit, for ever. Blocking again
    // once open: a reader that falls behind must not cut a report short.
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd >= 0) {
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    } else if (!is_stderr(path)) {  // (/dev/stderr on a socket, as under journald: the same place)
        warn_once(g_open_failed, "cannot open the ZMM_LOG file ", path, errno, "reports go to stderr");
    }
    errno = saved;
    return fd >= 0 ? fd : 2;
}

void note_report_write_failed(int fd, int error) {
    if (fd != 2 && g_report_path[0])
        warn_once(g_write_failed, "a report to the ZMM_LOG file is incomplete", "", error,
                  "the next ones go to stderr");
}

void report_close(int fd) {
    if (fd != 2) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
}

void misuse(Misuse kind, const void* ptr, const char* detail) {
    Text t;
    t.str("zmm: ").str(describe(kind)).hex(reinterpret_cast<uintptr_t>(ptr));
    if (detail) t.str(" (").str(detail).chr(')');
    t.chr('\n');
    if (g_hook) {
        g_hook(kind, ptr, t.c_str());
        // a hook that returns still must not let the heap go on
    }
    int fd = report_open();
    os::write_all(fd, t.data(), t.size());
    report_close(fd);
    if (fd != 2) os::write_all(2, t.data(), t.size());
    die();
}

void panic(const char* message) {
    Text t;
    t.str("zmm: ").str(message).chr('\n');
    if (g_hook) g_hook(Misuse::heap_corrupted, nullptr, t.c_str());
    t.flush(2);
    die();
}

void warn(const char* a, const char* b, const char* c, const char* d, const char* e) {
    Text t;
    t.str("zmm: warning: ").str(a);
    for (const char* part : {b, c, d, e})
        if (part) t.str(part);
    t.chr('\n');
    int fd = report_open();
    t.flush(fd);
    report_close(fd);
}

}  // namespace zmm
