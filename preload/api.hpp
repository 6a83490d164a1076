// The allocation entry points as hidden inline functions, shared by the C
// interface (malloc.cpp) and operator new/delete (new_delete.cpp), so that
// neither calls the other through the PLT.
#pragma once

#include <cstddef>

#include "thread_heap.hpp"

namespace zmm::api {

// `entry`: the frame address of the allocator's entry that calls it, if
// not malloc_slow's own (the caller is zmm's: operator new's slow path), from
// where a traced allocation's stack is unwound.
void* malloc_slow(size_t size, const void* entry = nullptr);
void free_slow(void* p);

// A miss of the fast path (an empty bin list) takes the slow path, never the
// heap's own refill directly: the slow path marks the thread as inside the
// allocator first, so that a signal handler's allocation landing there is
// served elsewhere (reentry.hpp).
// The fast path alone: nullptr on a miss, for a caller whose slow path is
// more than malloc_slow (operator new's), so that the hit keeps no frame.
__attribute__((always_inline)) inline void* malloc_fast(size_t size) {
    Heap* h = t_heap;
    if (__builtin_expect(size <= k_max_small, 1)) return h->try_pop_small(h->bin_of(size));
    return nullptr;
}

__attribute__((always_inline)) inline void* malloc(size_t size) {
    if (void* p = malloc_fast(size); __builtin_expect(p != nullptr, 1)) return p;
    return malloc_slow(size);
}

// The fast path found p outside the chunks its heap's cache names (a
// chunk of another heap's: a cross-thread free; not a chunk at all; or a
// chunk of h's the cache does not hold, which it then remembers). Out of
// line, a tail call, so that the fast path keeps no frame. `h` is the heap
// the fast path tried (t_heap may have changed since: a signal's request
// switch).
void free_uncached(void* p, Heap* h);

__attribute__((always_inline)) inline void free(void* p) {
    Heap* h = t_heap;
    Heap::Fast_free r = h->try_free_small(p);
    if (__builtin_expect(r == Heap::k_fast_freed, 1)) return;
    if (r == Heap::k_fast_free_uncached) return free_uncached(p, h);
    free_slow(p);
}

void free_sized_slow(void* p, size_t size, const void* site);
// As free_uncached, for a sized delete: in a chunk another heap owns, the
// size claimed is checked against the page's bin there.
void free_sized_uncached(void* p, size_t size, const void* site, Heap* h);

// operator delete(void*, size_t): the size is checked, never trusted.
// `site` is the caller's return address, to report a wrong size once per site.
// (A block whose slot test fails is of the bin claimed: its size fits.)
__attribute__((always_inline)) inline void free_sized(void* p, size_t size, const void* site) {
    Heap* h = t_heap;
    Heap::Fast_free r = h->try_free_small_sized(p, size);
    if (__builtin_expect(r == Heap::k_fast_freed, 1)) return;
    if (r == Heap::k_fast_free_uncached) return free_sized_uncached(p, size, site, h);
    free_sized_slow(p, size, site);
}

void* calloc(size_t n, size_t size);
void* realloc_slow(void* p, size_t size);
// A small block of the thread's heap that stays small: in place, or moved
// within the heap's bins, on the fast paths' terms (no frame but the copy's).
__attribute__((always_inline)) inline void* realloc(void* p, size_t size) {
    if (void* q = t_heap->try_realloc_small(p, size); __builtin_expect(q != nullptr, 1)) return q;
    return realloc_slow(p, size);
}
void* aligned(size_t alignment, size_t size);  // alignment: a power of two
size_t usable_size(const void* p);

}  // namespace zmm::api
