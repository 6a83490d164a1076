// Requests: a span of one thread's life (or the whole process's) whose
// allocations come from a heap of their own, counted, limited, and reported
// at the end (DESIGN.md, Requests).
//
// A request is a heap: begin switches the thread's allocations to its request
// heap; frees find their heap by pointer, wherever they come from; end drains
// the remote frees, reports the live blocks (the leaks), and merges what is
// left into the thread's own heap (or releases it, with ZMM_RECLAIM=1).
#pragma once

#include <cstddef>
#include <cstdint>

#include "block_table.hpp"
#include "fast_unwind.hpp"
#include "heap.hpp"
#include "thread_heap.hpp"

namespace zmm {

struct Request {
    uint64_t id;
    char name[128];
    Heap* heap;
    Block_table table;  // traced requests: every live block's size and stack
    // Untraced: at least the number of carried blocks in the table that each
    // end lists again (those not found lost, k_block_lost); 0 spares the
    // walk of the table.
    size_t carried_candidates;
    bool traced;
    // Its slow paths go straight to its heap (traced_request_heap): traced,
    // and not under ZMM_DEBUG (whose checks are the general paths').
    bool direct;
    bool process_wide;  // this thread's share of a process-wide request
    uint64_t generation;  // of the process-wide request it belongs to
    int tid;
    uint64_t begin_ns;
    double avg_chunks;  // ZendMM's avg_chunks_count, for the chunk cache
    // Traced: the thread's stacks seen before, each tagged with its depot id
    // (trace_allocation). Kept with the record from request to request.
    fast_unwind::Memo stacks;
};

// The API (zmm.h).
int request_begin(const char* name);
long request_end();
size_t memory_usage(bool real);
size_t memory_peak_usage(bool real);
int set_memory_limit(size_t bytes);
void set_limit_handler(void (*handler)(size_t, size_t, void*), void* arg);

// For thread_heap(): the request heap the calling thread must allocate from
// now (joining a process-wide request if one is open), or nullptr.
Heap* request_heap_for_thread();

namespace process_request {
bool still_in(const Request* r);  // (process_request.hpp)
}

// The calling thread's traced request heap when a call that missed the fast
// path is the request's (as thread_heap() would say, in fewer tests): not
// while zmm itself allocates (a capture's, a report's: depth, tool heap),
// nor once the process-wide request it shares has ended. Else null: ask
// thread_heap().
inline Heap* traced_request_heap() {
    const Request* r = t_state.request;
    if (!r || !r->direct || t_state.depth > 0 || t_state.tool_heap) return nullptr;
    if (r->process_wide && !process_request::still_in(r)) return nullptr;
    return r->heap;
}

// Records a block just allocated from a traced request heap. `entry`: the
// frame address of the allocator's entry that serves it: its stack is
// captured from there (null: from the capture's own frame).
void trace_allocation(Heap* heap, void* block, size_t size, const void* entry);
// The same for a realloc's result (`old_block` its argument): a block
// carried from an earlier request that stayed in place keeps its entry.
void trace_reallocation(Heap* heap, const void* old_block, void* block, size_t size, const void* entry);

// Thread exit: the thread's share of a process-wide request is handed over;
// an API request left open is ended (and reported).
void thread_leaves_requests();

// Start-up of the request machinery (process and signal modes); called from
// the library constructor, outside the allocator.
void start_requests();
// Exit: the process-wide request ends and is reported; the leak exit code.
void finish_requests();

}  // namespace zmm
