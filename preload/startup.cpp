// The library's constructor and destructor: start-up that may not run inside
// malloc (loading libunwind for backtraces, the process-wide request), and
// what happens at exit (the process-wide request's report, statistics, the
// leak exit code). Everything else starts lazily in control/thread_heap.cpp.

#include "api.hpp"
#include "backtrace.hpp"
#include "diag.hpp"
#include "glibc_heap.hpp"
#include "leak_scan.hpp"
#include "options.hpp"
#include "request.hpp"
#include "stats_report.hpp"
#include "thread_heap.hpp"

namespace zmm {

void* heap_missing(size_t size) { return api::malloc_slow(size); }

// Priority 101: before the program's own constructors (its allocations are
// then already part of a process-wide request).
__attribute__((constructor(101))) static void zmm_constructor() {
    glibc_heap::note_initial_break();  // glibc's main arena can only start above it
    start_again_with_environment();
    uintptr_t lo, hi;
    if (backtrace::text_range_of(reinterpret_cast<const void*>(&zmm_constructor), &lo, &hi))
        backtrace::set_own_range(lo, hi);
    start_requests();
}

// ELF destructors run after the program's static destructors and atexit
// handlers: the process-wide request's report sees what they freed.
__attribute__((destructor(101))) static void zmm_destructor() {
    if (bypassed()) return;
    leak_scan::Program_frame frame;
    finish_requests();
    if (options().stats) {
        int fd = report_open();
        write_stats_report(fd);
        report_close(fd);
    }
}

}  // namespace zmm
