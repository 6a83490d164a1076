// Which heap serves the calling thread.
//
// t_heap is what the allocation fast path uses, in initial-exec TLS (static
// TLS of the preloaded library: it exists before the first malloc, reading it
// is one instruction pair, no __tls_get_addr, no allocation). It points at
// the thread's own (persistent) heap, or at its request heap during an
// untraced request, or at g_empty_heap: no heap yet, zmm bypassed, or a
// traced request (every allocation then takes the slow path, which records
// where it came from).
#pragma once

#include <atomic>
#include <cstdint>

#include "heap.hpp"

namespace zmm {

struct Request;

struct Thread_state {
    Heap* persistent;      // the thread's own heap, once it has one
    Request* request;      // the open request, or null
    Request* spare;        // this thread's request record, kept for the next request
    Heap* request_heap;    // this thread's request heap (retired between requests)
    size_t limit;          // for this thread's requests, when limit_set
    bool limit_set;        // else ZMM_MEMORY_LIMIT
    void (*limit_handler)(size_t, size_t, void*);
    void* limit_arg;
    uint64_t process_generation;  // the process-wide request this thread joined
    int depth;             // > 0 while zmm captures a backtrace or reports
    int busy;              // > 0 inside an allocator slow path (see process_request)
    // > 0 while the thread's heaps may be mid-update (a Busy_section), 0 again
    // inside a Tool_scope (whose allocations go to the tool heap): an entry
    // into the allocator that finds it set interrupted zmm (reentry below).
    int in_allocator;
    // Inside the program's signal handlers (Handler_scope): how deep, and
    // what the outermost one found.
    int handler_depth;
    uintptr_t handler_frame;
    uintptr_t handler_alt_lo, handler_alt_hi;  // the alternate signal stack
    bool handler_on_alt;   // the outermost handler runs on it
    Heap* handler_saved_heap;
    int handler_saved_in_allocator;
    bool own_sigaction;    // zmm installs a handler of its own (not wrapped)
    bool no_requests;      // zmm's own threads never join a request
    // The leak scan (leak_scan.cpp): an address in the thread's stack, and,
    // while the thread is stopped for a scan, its stack pointer (its static
    // TLS is above it, in the same mapping; the main thread's is in
    // anonymous memory, read as such).
    uintptr_t stack_hint;
    uintptr_t scan_sp;
    const void* scan_from;  // an API call's frame: the program's stack starts here
    std::atomic<uint32_t> scan_ack;  // the scan epoch this thread stopped for
    bool scan_missed;      // did not stop for the last scan
    bool stop_pending;     // a scan's stop arrived inside a slow path (leak_scan)
    Heap* tool_heap;       // inside a Tool_scope: the tool heap
    size_t reported_seen;  // process-wide reports' lost blocks this thread has marked
    int tool_depth;
};

extern constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec")));
extern constinit thread_local Thread_state t_state __attribute__((tls_model("initial-exec")));

// The identity of the calling thread for heap ownership: the address of its
// TLS state (unique among live threads, stable across fork in the forking
// thread, needs no system call).
const void* thread_token();

// The heap the fast path may use for h: h itself, or the empty heap when
// every allocation must take the slow path (ZMM_DEBUG=1).
Heap* fast_path_heap(Heap* h);

// Reads the options (once). Safe inside the first malloc of the process.
void start();
// From the library constructor: the options again if environ was missing.
void start_again_with_environment();
bool bypassed();

// zmm's own work that goes through the program's malloc (symbolizing a
// report: libdw's caches are megabytes) is served, while a Tool_scope lives,
// by the tool heap: one process-wide heap of zmm's own, used by one thread at
// a time (a lock), whose blocks are not the program's: the leak scan does not
// read them as roots. Its blocks freed outside a scope go onto its remote
// stack. Scopes nest.
class Tool_scope {
public:
    Tool_scope();
    ~Tool_scope();
    Tool_scope(const Tool_scope&) = delete;
    Tool_scope& operator=(const Tool_scope&) = delete;

private:
    Heap* saved_ = nullptr;
    int saved_in_allocator_ = 0;
    bool active_ = false;
};

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
            t_state.handler_on_alt = here >= alt_lo && here < alt_hi;
            t_state.handler_saved_heap = t_heap;
            t_state.handler_saved_in_allocator = t_state.in_allocator;
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
};

// zmm's own handlers (the leak scan's stop, the request signal) are
// installed in one of these: not wrapped.
struct Own_sigaction {
    Own_sigaction() { t_state.own_sigaction = true; }
    ~Own_sigaction() { t_state.own_sigaction = false; }
    Own_sigaction(const Own_sigaction&) = delete;
    Own_sigaction& operator=(const Own_sigaction&) = delete;
};

// The heap the calling thread allocates from now (its request heap during a
// request), acquiring its own heap if needed; nullptr when zmm is bypassed or
// the OS has no memory for a heap.
Heap* thread_heap();
// The calling thread's own heap (never a request heap).
Heap* persistent_heap();

}  // namespace zmm
