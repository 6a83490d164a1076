// The chunk registry: "is this pointer ours?" for any address, in one load.
//
// One byte per 2 MiB granule of the 47-bit user address space (64 Mi entries,
// 64 MiB of zero-initialised .bss that the kernel backs only where written:
// one 4 KiB page of the registry covers 8 GiB of address space). A pointer
// whose granule is not marked is never dereferenced as zmm's.
//
// Chunks and huge blocks are 2 MiB aligned, so every granule is wholly one
// chunk, or part of one huge block, or not ours. The registry needs no
// initialisation: it works for the very first malloc of the process.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace zmm {

enum Granule : uint8_t {
    granule_none = 0,
    granule_chunk = 1,       // a chunk's 2 MiB
    granule_huge = 2,        // the first 2 MiB of a huge block (its start)
    granule_huge_tail = 3,   // a later granule of a huge block
    granule_huge_freed = 4,  // where a huge block started, freed: its mapping cached (or a chunk made of it)
    // Where a freed huge block started, its mapping gone: only that address
    // is still zmm's (a second free is a double free); the kernel may have
    // placed anything else in the granule since.
    granule_huge_unmapped = 5,
};

inline constexpr unsigned k_granule_shift = 21;
inline constexpr unsigned k_address_bits = 47;
inline constexpr size_t k_granules = size_t{1} << (k_address_bits - k_granule_shift);

namespace registry_detail {
extern std::atomic<uint8_t> g_granules[k_granules];
}

inline Granule granule_of(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a >> k_address_bits) return granule_none;
    return static_cast<Granule>(
        registry_detail::g_granules[a >> k_granule_shift].load(std::memory_order_relaxed));
}

// For the hot path: the granule index doubles as the range check.
inline bool is_chunk_granule(uintptr_t a) {
    uintptr_t g = a >> k_granule_shift;
    return g < k_granules &&
           registry_detail::g_granules[g].load(std::memory_order_relaxed) == granule_chunk;
}

// Marks [p, p + size) (2 MiB aligned start) as `kind`; a huge block's later
// granules as granule_huge_tail.
void registry_mark(const void* p, size_t size, Granule kind);
void registry_clear(const void* p, size_t size, Granule leave_at_start = granule_none);

// The start of the huge block whose span may contain p, walking back over
// tail granules; nullptr if p's granule is not part of a huge block. The
// caller checks the block's length.
void* registry_huge_start(const void* p);

}  // namespace zmm
