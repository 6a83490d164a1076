// Which heap serves the calling thread.
//
// t_heap is what the allocation fast path uses, in initial-exec TLS (static
// TLS of the preloaded library: it exists before the first malloc, reading it
// is one instruction pair, no __tls_get_addr, no allocation). It points at
// the thread's own (persistent) heap, or at its request heap during an
// untraced request, or at the tool heap inside a Tool_scope, or at
// g_empty_heap: no heap yet, zmm bypassed, a traced request (every
// allocation then takes the slow path, which records where it came from), or
// a program's signal handler running (reentry.hpp).
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
    int busy;              // > 0 inside a Busy_section (reentry.hpp)
    // > 0 while the thread's heaps may be mid-update (a Busy_section), 0 again
    // inside a Tool_scope (whose allocations go to the tool heap): an entry
    // into the allocator that finds it set interrupted zmm (reentry.hpp).
    int in_allocator;
    // Inside the program's signal handlers (Handler_scope): how deep, and
    // what the outermost one found.
    int handler_depth;
    uintptr_t handler_frame;
    uintptr_t handler_alt_lo, handler_alt_hi;  // the alternate signal stack
    Heap* handler_saved_heap;
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
    std::atomic<bool> switch_pending;  // a process-wide request's switch sent, not yet handled
    bool stop_pending;     // a scan's stop arrived inside a slow path (leak_scan)
    Heap* tool_heap;       // inside a Tool_scope: the tool heap
    size_t reported_seen;  // process-wide reports' lost blocks this thread has marked
    int tool_depth;
    // The thread's heap as it took it (its allocations then), and how many
    // more frees into other heaps may still find one to take instead
    // (take_heap_of); 0 once the thread allocated, or gave up.
    uint64_t allocations_at_acquire;
    int exchange_tries;
};

extern constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec")));
extern constinit thread_local Thread_state t_state __attribute__((tls_model("initial-exec")));

// The identity of the calling thread for heap ownership: the address of its
// TLS state (unique among live threads, stable across fork in the forking
// thread, needs no system call).
inline const void* thread_token() { return &t_state; }

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

// The heap the calling thread allocates from now (its request heap during a
// request), acquiring its own heap if needed; nullptr when zmm is bypassed or
// the OS has no memory for a heap.
Heap* thread_heap();
// The calling thread's own heap (never a request heap).
Heap* persistent_heap();

// p, a block in a chunk of another heap's, is about to be freed by a thread
// whose heap is still as it took it: if p's heap waits in the pool, the
// thread takes it instead of its own (heap_pool::exchange), and p's free is
// then local. A thread that begins by freeing a dead thread's blocks (a new
// worker taking over a queue, or a graveyard) reuses their memory at once,
// where it would otherwise grow its own heap while theirs waits.
void take_heap_of(void* p);

}  // namespace zmm
