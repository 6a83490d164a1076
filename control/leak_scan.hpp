// The leak scan (ZMM_LEAKS=lost): which blocks of an ending request the
// program can still reach, from every root of the running process.
//
// Roots: the writable segments of every loaded module (zmm's own left out),
// every registered thread's stack from its stack pointer up and its static
// TLS, and every live block of every heap that is not a candidate.
//
// While the roots are read the other threads are stopped without ptrace
// (which containers and seccomp forbid): each gets an internal real-time
// signal whose handler records its stack pointer (its registers are in
// the signal frame, on the stack it records) and waits on
// a futex until the scan is over. A thread blocked in a system call is
// stopped as well; the call resumes after (SA_RESTART) or returns EINTR
// where the kernel never restarts it (nanosleep, poll and their kind). A
// thread that blocks the signal is not stopped: its stack is read as a
// whole, and the report says how many there were.
#pragma once

#include <cstddef>
#include <cstdint>

#include "leak_report.hpp"
#include "thread_heap.hpp"

namespace zmm::leak_scan {

// At an entry from the program into zmm that may end in a scan (the library
// destructor, thread exit): the program's stack starts at this frame's
// address (its locals, and zmm's frames below, with stale copies of blocks'
// addresses, are not read). The request API's entry saves the program's
// registers too (api.cpp).
struct Program_frame {
    bool outer;
    __attribute__((always_inline)) Program_frame() {
        outer = t_state.scan_from == nullptr;
        if (outer) t_state.scan_from = __builtin_frame_address(0);
    }
    ~Program_frame() {
        if (outer) t_state.scan_from = nullptr;
    }
    Program_frame(const Program_frame&) = delete;
    Program_frame& operator=(const Program_frame&) = delete;
};

// The internal signal that stops threads for a scan (0 before start()).
int stop_signal();

// A stop that arrived while the thread was inside an allocator slow path
// (its heap lists mid-update) is taken here, when it leaves.
void stop_if_pending();

// fork(): no scan runs across it (its lock is taken before, released in
// the parent); the child has no scan running and no thread stopped.
void before_fork();
void after_fork_parent();
void after_fork_child();

// Installs the stop signal's handler. From start-up, outside the allocator.
void start();

// The heap of the request being classified, when it is the calling thread's
// own (nobody else changes its table meanwhile): its blocks an earlier scan
// found lost (k_block_lost) are not read as roots, unless a pointer to one
// is found again (`found_again` counts those; their mark is cleared).
// `covered`: every other live block of it is a candidate, so that it is not
// walked at all.
struct Own_heap {
    const Heap* heap = nullptr;
    bool covered = false;
    size_t found_again = 0;
};

// Sets the kind of each of `leaks` (block starts). Outside the allocator, on
// a thread with a heap. The calling thread's stack is read from
// t_state.scan_from when set (an API call records the program's frame
// there), else from the caller's frame.
Scan_info classify(Leak* leaks, size_t count, Own_heap* own = nullptr);

}  // namespace zmm::leak_scan
