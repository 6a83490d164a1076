#include "glibc_heap.hpp"

#include <cstdint>

#include "chunk_registry.hpp"
#include "heap.hpp"
#include "os.hpp"

namespace zmm::glibc_heap {
namespace {
constexpr uintptr_t k_prev_inuse = 1, k_is_mmapped = 2, k_non_main_arena = 4;
constexpr uintptr_t k_heap_max = uintptr_t{64} << 20;  // 2 * DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
uintptr_t g_initial_break = 0;

size_t size_word(const void* p) { return reinterpret_cast<const size_t*>(p)[-1]; }

// The memory glibc's free of p (a block it owns) would touch: its chunk, or
// the whole mapping of an mmapped one (which glibc unmaps), as [*lo, *hi).
void extent(const void* p, uintptr_t* lo, uintptr_t* hi) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const size_t word = size_word(p);
    const size_t before = (word & k_is_mmapped) ? reinterpret_cast<const size_t*>(p)[-2] : 0;
    *lo = a - 16 - before;
    *hi = a - 16 + (word & ~size_t{7});
}
}  // namespace

void note_initial_break() {
    if (!g_initial_break) g_initial_break = os::current_break();
}

bool owns(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a == 0 || (a & 15) != 0 || a < 4096) return false;
    if (!os::is_mapped(reinterpret_cast<const void*>(a - 16))) return false;
    size_t word = size_word(p);
    size_t chunk = word & ~size_t{7};
    if (chunk < 32 || (chunk & 15)) return false;
    if (word & k_is_mmapped) {
        size_t prev = reinterpret_cast<const size_t*>(p)[-2];
        uintptr_t base = a - 16 - prev;
        return (base & 4095) == 0 && ((prev + chunk) & 4095) == 0;
    }
    uintptr_t next = a - 16 + chunk;
    if (next < a || !os::is_mapped(reinterpret_cast<const void*>(next + 8))) return false;
    bool in_use = reinterpret_cast<const size_t*>(next)[1] & k_prev_inuse;
    if (!in_use) return false;
    if (word & k_non_main_arena) {
        uintptr_t heap = a & ~(k_heap_max - 1);
        if (!os::is_mapped(reinterpret_cast<const void*>(heap))) return false;
        const uintptr_t* info = reinterpret_cast<const uintptr_t*>(heap);  // heap_info
        size_t heap_size = info[2];
        return info[0] != 0 && heap_size <= k_heap_max && next <= heap + heap_size;
    }
    uintptr_t brk = os::current_break();
    return g_initial_break && a >= g_initial_break && next <= brk;
}

size_t usable_size(const void* p) {
    size_t word = size_word(p);
    size_t chunk = word & ~size_t{7};
    return (word & k_is_mmapped) ? chunk - 16 : chunk - 8;
}

}  // namespace zmm::glibc_heap

namespace zmm {

// glibc's aligned blocks land where a freed huge block of zmm's started:
// its mmap reuses the hole, from the page below, where its chunk header is.
// glibc's header decides, if p is mapped (zmm's freed block is not) and
// what glibc's free would touch (the whole mapping of an mmapped chunk,
// which it unmaps) holds none of zmm's memory: the page below may be
// anything since, and its bytes could mimic a header (helper-58).
bool foreign_block_at_freed_huge_start(const void* p) {
    if (!os::is_mapped(p) || !glibc_heap::owns(p)) return false;
    uintptr_t lo = 0, hi = 0;
    glibc_heap::extent(p, &lo, &hi);
    if (hi <= lo || (hi - 1) >> k_address_bits) return false;
    if (((hi - 1) >> k_granule_shift) - (lo >> k_granule_shift) > (uintptr_t{1} << 20))
        return false;  // (2 TiB)
    for (uintptr_t g = lo >> k_granule_shift; g <= (hi - 1) >> k_granule_shift; ++g) {
        const Granule k = granule_of(reinterpret_cast<const void*>(g << k_granule_shift));
        if (k != granule_none && k != granule_huge_unmapped) return false;
    }
    return true;
}

}  // namespace zmm
