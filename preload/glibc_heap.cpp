#include "glibc_heap.hpp"

#include <cstdint>

#include "os.hpp"

namespace zmm::glibc_heap {
namespace {
constexpr uintptr_t k_prev_inuse = 1, k_is_mmapped = 2, k_non_main_arena = 4;
constexpr uintptr_t k_heap_max = uintptr_t{64} << 20;  // 2 * DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
uintptr_t g_initial_break = 0;

size_t size_word(const void* p) { return reinterpret_cast<const size_t*>(p)[-1]; }
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

void extent(const void* p, uintptr_t* lo, uintptr_t* hi) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const size_t word = size_word(p);
    const size_t chunk = word & ~size_t{7};
    if (word & k_is_mmapped) {
        const size_t prev = reinterpret_cast<const size_t*>(p)[-2];
        *lo = a - 16 - prev;
        *hi = a - 16 + chunk;
    } else {
        *lo = a - 16;
        *hi = a - 16 + chunk;
    }
}

size_t usable_size(const void* p) {
    size_t word = size_word(p);
    size_t chunk = word & ~size_t{7};
    return (word & k_is_mmapped) ? chunk - 16 : chunk - 8;
}

}  // namespace zmm::glibc_heap
