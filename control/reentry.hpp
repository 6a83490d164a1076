// Calls into the allocator from inside it: a program's signal handler that
// interrupted malloc, a memory-limit handler that allocates. The thread's
// heaps may be mid-update; these calls are served apart (the reentry heap).
// Also the markers that say the thread is inside the allocator
// (Busy_section, Handler_scope) and the signal blocking they rely on.
#pragma once

#include <atomic>
#include <cstdint>

#include "leak_scan.hpp"
#include "os.hpp"
#include "thread_heap.hpp"

namespace zmm {

// Allocations and frees that arrive while the thread is inside zmm's
// allocator (t_state.in_allocator): a signal handler that interrupted a slow
// path, which POSIX leaves undefined and programs do anyway, or a memory
// limit handler that allocates. The thread's heaps may be mid-update: these
// are served by the reentry heap, one process-wide heap under a lock held
// with every signal blocked (so that no handler on the same thread can wait
// for it), and blocks of any other heap are freed through its remote stack.
// Never traced, never a request's.
namespace reentry {
// False again after a handler left by siglongjmp (see Handler_scope).
bool still_inside();
inline bool inside() { return t_state.in_allocator > 0 && still_inside(); }
void* alloc(size_t size, size_t alignment, bool zeroed);  // alignment 0: malloc's
// False when p is not zmm's (the caller deals with foreign pointers).
bool free(void* p);
void* realloc(void* p, size_t size);  // p is zmm's

// Makes the reentry heap (start-up, not bypassed).
void start();
// fork(): the reentry heap's lock (thread_heap's fork handlers, in order).
void before_fork();
void after_fork_parent();
void after_fork_child();
}  // namespace reentry

// Wraps each signal handler the program installs (preload's sigaction):
// while it runs, every allocation and free of the thread goes through the
// reentry path, whatever the handler interrupted (POSIX leaves malloc in a
// handler undefined; programs do it, and glibc can deadlock there). A
// handler left by siglongjmp leaves the scope unclosed: the next allocator
// entry that finds itself off the alternate stack and above the handler's
// frame (or off the alternate stack, if the handler ran on it) closes it.
class Handler_scope {
public:
    // `alt_lo`..`alt_hi`: the alternate signal stack at delivery (empty if none).
    Handler_scope(uintptr_t alt_lo, uintptr_t alt_hi) {
        if (t_state.handler_depth) reentry::still_inside();  // an earlier handler left by siglongjmp
        if (t_state.handler_depth == 0) {
            uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
            t_state.handler_frame = here;
            t_state.handler_alt_lo = alt_lo;
            t_state.handler_alt_hi = alt_hi;
            t_state.handler_saved_heap = t_heap;
        }
        t_heap = &g_empty_heap;  // the fast paths miss, into the slow paths' reentry check
        ++t_state.in_allocator;
        std::atomic_signal_fence(std::memory_order_seq_cst);  // the fields above, before the depth says so
        ++t_state.handler_depth;
        std::atomic_signal_fence(std::memory_order_seq_cst);
    }
    ~Handler_scope() {
        std::atomic_signal_fence(std::memory_order_seq_cst);
        if (t_state.handler_depth == 0) return;  // closed meanwhile (siglongjmp inside, then back)
        --t_state.in_allocator;
        // The outermost puts back the heap it found (or the empty heap, if
        // a request switch came meanwhile: process_request).
        if (--t_state.handler_depth == 0) t_heap = t_state.handler_saved_heap;
    }
    Handler_scope(const Handler_scope&) = delete;
    Handler_scope& operator=(const Handler_scope&) = delete;

    // The thread's next allocation takes the slow path (a request switch):
    // now, and after the program's signal handler it may be in, whose scope
    // would put back the heap it found.
    static void send_to_slow_path() {
        t_heap = &g_empty_heap;
        if (t_state.handler_depth > 0) t_state.handler_saved_heap = &g_empty_heap;
    }
};

// zmm's own handlers (the leak scan's stop, the request signal) are
// installed in one of these: not wrapped.
struct Own_sigaction {
    Own_sigaction() { t_state.own_sigaction = true; }
    ~Own_sigaction() { t_state.own_sigaction = false; }
    Own_sigaction(const Own_sigaction&) = delete;
    Own_sigaction& operator=(const Own_sigaction&) = delete;
};

// Marks an allocator slow path, or zmm's own heap updates outside one (a
// request's end): the process-wide request's switch and the leak scan's
// stop wait until the thread leaves it.
// It also marks the thread as inside the allocator (reentry, above).
struct Busy_section {
    Busy_section() {
        if (t_state.handler_depth) reentry::still_inside();  // a handler left by siglongjmp
        ++t_state.busy;
        ++t_state.in_allocator;
    }
    ~Busy_section() {
        --t_state.in_allocator;
        if (--t_state.busy == 0 && t_state.stop_pending) leak_scan::stop_if_pending();
    }
    Busy_section(const Busy_section&) = delete;
    Busy_section& operator=(const Busy_section&) = delete;
};

// The program's code called from inside the allocator (a memory-limit
// handler): outside the allocator as far as the markers go while it runs.
// It may leave by longjmp, never to come back: the markers then stay clear,
// as they should for a thread back in the program.
class Program_code_section {
public:
    Program_code_section() : busy_(t_state.busy), in_allocator_(t_state.in_allocator) {
        t_state.busy = 0;
        t_state.in_allocator = 0;
    }
    ~Program_code_section() {
        t_state.busy = busy_;
        t_state.in_allocator = in_allocator_;
    }
    Program_code_section(const Program_code_section&) = delete;
    Program_code_section& operator=(const Program_code_section&) = delete;

private:
    int busy_, in_allocator_;
};

}  // namespace zmm
