#include "diag.hpp"

#include <cstdlib>
#include <signal.h>

#include "format.hpp"
#include "os.hpp"

namespace zmm {
namespace {
Abort_hook g_hook = nullptr;
int g_report_fd = 2;
bool g_report_is_stderr = true;

const char* describe(Misuse kind) {
    switch (kind) {
    case Misuse::double_free: return "double free of ";
    case Misuse::unknown_pointer: return "free of unknown pointer ";
    case Misuse::interior_pointer: return "free of interior pointer ";
    case Misuse::heap_corrupted: return "heap corrupted: overwritten free-list link at ";
    case Misuse::size_mismatch: return "sized delete with a wrong size for ";
    }
    return "misuse of ";
}

[[noreturn]] void die() {
    // abort() may be intercepted; make sure we never return into a broken heap.
    abort();
    _Exit(134);
}
}  // namespace

void set_abort_hook(Abort_hook hook) { g_hook = hook; }
void set_report_fd(int fd, bool is_stderr) {
    g_report_fd = fd;
    g_report_is_stderr = is_stderr;
}
int report_fd() { return g_report_fd; }

void misuse(Misuse kind, const void* ptr, const char* detail) {
    Text t;
    t.str("zmm: ").str(describe(kind)).hex(reinterpret_cast<uintptr_t>(ptr));
    if (detail) t.str(" (").str(detail).chr(')');
    t.chr('\n');
    if (g_hook) {
        g_hook(kind, ptr, t.c_str());
        // a hook that returns still must not let the heap go on
    }
    os::write_all(g_report_fd, t.data(), t.size());
    if (!g_report_is_stderr) os::write_all(2, t.data(), t.size());
    die();
}

void panic(const char* message) {
    Text t;
    t.str("zmm: ").str(message).chr('\n');
    if (g_hook) g_hook(Misuse::heap_corrupted, nullptr, t.c_str());
    t.flush(2);
    die();
}

void warn(const char* a, const char* b, const char* c) {
    Text t;
    t.str("zmm: warning: ").str(a);
    if (b) t.str(b);
    if (c) t.str(c);
    t.chr('\n');
    t.flush(g_report_fd);
}

}  // namespace zmm
