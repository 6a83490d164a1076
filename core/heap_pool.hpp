// Every heap of the process: made on demand, never freed, lent to one thread
// at a time. A thread that exits abandons its heap to the pool with its live
// blocks; the next thread without a heap adopts it, remote frees and all.
//
// The pool's lock is taken on a thread's first allocation, at thread exit,
// for a new request heap, around fork(), for statistics, for malloc_trim,
// for a free into a heap in the pool, when a new thread takes a pooled heap
// for its own (exchange), and at most every 100 ms from a heap's purge
// check or new run (trim_idle, which only tries it): never on the fast
// path.
#pragma once

#include <cstdint>

#include "heap.hpp"

namespace zmm::heap_pool {

// A heap for the thread identified by `owner`: an abandoned one if any, else
// a new one. nullptr only if the OS refuses memory for the heap itself.
Heap* acquire(const void* owner);

// The owner thread is leaving: its heap goes to the pool for adoption (with
// the request heaps retired into it).
void abandon(Heap* heap);

// A thread's heap that it has not allocated from since it took it goes
// back to the pool, and `wanted`, a heap in the pool, becomes the thread's
// instead (the heap whose blocks the thread began by freeing: a thread that
// takes over a dead one's work, as a pool's new worker does). False if
// `wanted` is not in the pool (another thread took it), or not among the
// 1024 heaps pooled last: the thread keeps `mine`, its outbox sent and its
// remote frees taken meanwhile.
bool exchange(Heap* mine, Heap* wanted, const void* owner);

// A heap for one thread's requests: listed with the others (statistics,
// fork) but never pooled; it is retired into the thread's heap after its
// request and reused by the thread's next request.
Heap* new_request_heap(const void* owner);

// A heap whose owner is gone and that is not in the pool because its state
// may be inconsistent (a thread that was inside malloc when another forked):
// never adopted; frees into it still work (remote stacks).
inline const void* const k_orphan = reinterpret_cast<const void*>(1);

// Owner values below a page are markers, not threads (k_orphan, and the
// embedder's own, such as the tool heap's "idle"): fork leaves them alone.
inline bool is_thread_token(const void* owner) { return reinterpret_cast<uintptr_t>(owner) >= 4096; }

// Frees into an abandoned heap are pushed onto its remote stacks (a free's
// own, or a chain another thread's outbox held meanwhile); this drains them
// from the freeing thread if the heap is still unowned, so that memory
// freed into dead threads' heaps does not wait for a new thread.
void reclaim_if_abandoned(Heap* heap, const void* current_owner);

// Pooled heaps idle for 100 ms or more give their memory back (collect).
// Done when a thread leaves; this, from a heap's slow paths (its purge
// check, a new run of a bin), does it too, at most every 100 ms, and never
// waits for the pool's lock.
void trim_idle();

// fork(): lock in the parent before, unlock after; in the child, every heap
// not owned by `survivor` (the forking thread) is orphaned.
void before_fork();
void after_fork_parent();
void after_fork_child(const void* survivor);

// Sum of every heap's statistics (racy reads of live heaps: figures only).
void total_stats(Heap_stats& out);

// collect() on every heap that is in the pool, and on `own` (the caller's).
size_t collect_all(Heap* own);

// The process's free-list key (random, fixed at the first heap).
uint64_t free_list_key();

// The newest heap; the others follow by all_next (heaps are never freed, and
// the list only grows at its head). Read without the lock: for the leak
// scan, which runs while the other threads are stopped.
Heap* all_heaps();

// For tests: how many heaps exist, how many wait in the pool.
unsigned heaps_count();
unsigned pooled_count();

}  // namespace zmm::heap_pool
