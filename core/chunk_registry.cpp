#include "chunk_registry.hpp"

namespace zmm {

namespace registry_detail {
std::atomic<uint8_t> g_granules[k_granules];
}
using registry_detail::g_granules;

void registry_mark(const void* p, size_t size, Granule kind) {
    uintptr_t g = reinterpret_cast<uintptr_t>(p) >> k_granule_shift;
    size_t n = (size + (size_t{1} << k_granule_shift) - 1) >> k_granule_shift;
    for (size_t i = 1; i < n; ++i)
        g_granules[g + i].store(kind == granule_chunk ? granule_chunk : granule_huge_tail,
                                std::memory_order_relaxed);
    g_granules[g].store(kind, std::memory_order_release);
}

void registry_clear(const void* p, size_t size, Granule leave_at_start) {
    uintptr_t g = reinterpret_cast<uintptr_t>(p) >> k_granule_shift;
    size_t n = (size + (size_t{1} << k_granule_shift) - 1) >> k_granule_shift;
    g_granules[g].store(leave_at_start, std::memory_order_release);
    for (size_t i = 1; i < n; ++i) g_granules[g + i].store(granule_none, std::memory_order_relaxed);
}

void* registry_huge_start(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a >> k_address_bits) return nullptr;
    uintptr_t g = a >> k_granule_shift;
    for (;;) {
        uint8_t k = g_granules[g].load(std::memory_order_acquire);
        if (k == granule_huge) return reinterpret_cast<void*>(g << k_granule_shift);
        if (k != granule_huge_tail || g == 0) return nullptr;
        --g;
    }
}

}  // namespace zmm
