// The process-wide request (ZMM_REQUEST=process, ZMM_REQUEST=signal): one
// request made of every thread's share. A thread joins at its next
// allocation slow path while the request is open; an internal signal makes
// threads that only use the fast path switch at once. At the end each thread
// ends its share (in that signal's handler when it is outside the allocator,
// so blocked threads do not delay the report), and one report covers all.
#pragma once

#include "heap.hpp"
#include "request.hpp"
#include "thread_heap.hpp"

namespace zmm::process_request {

// Installs the signal handlers and the reporter thread as the mode needs,
// and opens the request for ZMM_REQUEST=process. Outside the allocator.
void start();
// Closes an open process-wide request and reports it (process exit).
void finish();

// For the allocator's slow path: the heap of the calling thread's share,
// joining the open request; nullptr when none is open.
Heap* join();
// Is the request `r` (a share) still the open one?
bool still_in(const Request* r);
// The calling thread's share ends (the request closed, or the thread exits).
void leave();
// Did the calling thread miss a switch: is a process-wide request open that
// it has not joined, or has its share's request ended? The switch signal
// sends a thread to its slow path, which then joins or leaves; a thread
// that blocks every signal (a raw rt_sigprocmask, which zmm does not see)
// never gets it, and its slow path asks this instead.
bool missed_switch();

// Thread registry: threads with a heap, to be signalled.
void register_thread();
void unregister_thread();

// For the leak scan: the registered threads, with the list locked (no thread
// registers or leaves until unlock_threads). Entries are (tid, state).
// Entries of threads that are gone without leaving (a thread that allocated
// after its last thread-exit destructor) are dropped first. `unlisted`: some
// thread could not be listed (more than k_max_threads).
struct Thread_ref {
    int tid;
    Thread_state* state;
};
inline constexpr unsigned k_max_threads = 4096;
const Thread_ref* lock_threads(unsigned* count, bool* unlisted);
void unlock_threads();
// With the list locked: addresses in the stacks of threads that have exited
// (the latest 256).
const uintptr_t* dead_stacks(unsigned* count);

// fork(): the thread list's lock is taken before and released in the parent
// (after_fork_child resets it).
void before_fork();
void after_fork_parent();
void after_fork_child();

// The internal signal that switches threads into and out of the request
// (0 when none is installed).
int switch_signal();

}  // namespace zmm::process_request
