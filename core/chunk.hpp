// A chunk: 2 MiB, 2 MiB aligned, 512 pages of 4 KiB. Page 0 is this header.
//
// free_map has one bit per page (set = in use; page 0 always set). map has one
// word per page saying what the page holds, so any pointer resolves to its
// bin or run in one load:
//
//   0                         free page
//   k_small | bin | start     page of a small run (every page of the run
//                             has the same word, small_page_word): the bin
//                             in bits 26..30, and in bits 12..20 the run's
//                             first byte, negated: a pointer's low 21 bits
//                             plus the word's are its offset in the run, so
//                             slot arithmetic needs no second lookup (an add
//                             and a mask); bit 25: k_small_slow_free
//   k_large | pages           first page of a large run of `pages` pages
//   k_large_tail | offset     later page of a large run (pages from the first)
//   k_large_freed             first page of a large run that was freed (until
//                             reused), so a second free is a double free
//
// Only k_small has bit 31 set: the hot path tests the sign. A small word's
// bin overlaps bits 28..30 (k_large, k_large_tail, k_large_freed): a reader
// tests k_small first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "size_class.hpp"

namespace zmm {

class Heap;

inline constexpr uint32_t k_small = 0x80000000u;
inline constexpr uint32_t k_large = 0x40000000u;
inline constexpr uint32_t k_large_tail = 0x20000000u;
inline constexpr uint32_t k_large_freed = 0x10000000u;
inline constexpr unsigned k_small_bin_shift = 26;
inline constexpr uint32_t k_small_start_mask = 0x001FF000u;  // the run's first byte, negated
inline constexpr uint32_t k_chunk_offset_mask = k_chunk_size - 1;
// On a small page: the page holds a block the fast free must not take (an
// untraced request heap's carried block: its free updates the heap's table;
// Chunk::carried_bits says which slots are, so that the others are freed
// on a branch of the fast free, Heap::free_in_carried_page).
// Setting it flips bit 20 of the start too (k_slow_free_skew): the fast
// path's offset (fast_offset_in_run) is then 1 MiB past the real one and
// matches no slot, so the free leaves the main line at no cost to it.
// Every other reader takes the skew out (small_unskewed).
inline constexpr uint32_t k_small_slow_free = 1u << 25;
inline constexpr unsigned k_slow_free_skew_shift = 5;  // from the flag's bit to the skew's
inline constexpr uint32_t k_slow_free_skew = k_small_slow_free >> k_slow_free_skew_shift;
static_assert(k_slow_free_skew == (k_chunk_size >> 1));
constexpr bool runs_end_below_the_skew() {
    for (unsigned b = 0; b < k_bins; ++b)
        if (size_t{k_bin_pages[b]} * k_page_size > k_slow_free_skew)
            return false;
    return true;
}
static_assert(runs_end_below_the_skew());
static_assert(k_chunk_size <= k_slot_offset_bound);

// The map word of every page of the small run of `bin` that starts at
// page `first_page` of its chunk.
constexpr uint32_t small_page_word(unsigned bin, unsigned first_page) {
    const uint32_t start = 0u - first_page * static_cast<uint32_t>(k_page_size);  // negated
    return k_small | (bin << k_small_bin_shift) | (start & k_small_start_mask);
}
constexpr unsigned small_bin(uint32_t info) { return (info >> k_small_bin_shift) & 0x1Fu; }
// small_bin of a word known to be a small page's (k_small set), as the fast
// paths index their bin tables with it: the compiler folds the subtraction
// into the loads' displacements, where small_bin's mask is an instruction.
constexpr size_t small_bin_index(uint32_t info) {
    return size_t{info >> k_small_bin_shift} - (k_small >> k_small_bin_shift);
}
// A small page's word as small_page_word made it (its slow-free flag kept).
constexpr uint32_t small_unskewed(uint32_t info) {
    return info ^ ((info & k_small_slow_free) >> k_slow_free_skew_shift);
}
constexpr unsigned small_run_first_page(uint32_t info) {
    return ((0u - small_unskewed(info)) & k_small_start_mask) / static_cast<uint32_t>(k_page_size);
}
constexpr uint32_t with_slow_free(uint32_t info) {
    return (info & k_small_slow_free) ? info : (info | k_small_slow_free) ^ k_slow_free_skew;
}
constexpr uint32_t without_slow_free(uint32_t info) {
    return (info & k_small_slow_free) ? (info & ~k_small_slow_free) ^ k_slow_free_skew : info;
}
// The offset of address `a` from the start of its small run (`info`: the
// map word of a's page), for the slot test.
inline uint64_t offset_in_run(uintptr_t a, uint32_t info) {
    return (static_cast<uint32_t>(a) + small_unskewed(info)) & k_chunk_offset_mask;
}
// The fast path's: offset_in_run, or at least 1 MiB on a slow-free page.
inline uint64_t fast_offset_in_run(uintptr_t a, uint32_t info) {
    return (static_cast<uint32_t>(a) + info) & k_chunk_offset_mask;
}
inline constexpr uint32_t k_pages_mask = 0x3FFu;
inline constexpr size_t k_carried_bits_bytes = k_chunk_pages * k_page_size / 8 / 8;  // 32 KiB

struct Chunk {
    Heap* heap;  // the owner: every block in this chunk belongs to it
    Chunk* next;
    Chunk* prev;
    uint32_t free_pages;
    uint32_t num;  // scratch: an index for per-chunk data while the owner enumerates
    uint64_t free_map[k_chunk_pages / 64];
    // Free pages that may still be resident (freed since the heap last gave
    // them back with MADV_DONTNEED): what a purge pass returns to the OS.
    uint64_t dirty_map[k_chunk_pages / 64];
    // Dirty pages that were dirty already at the heap's last purge pass: the
    // next pass gives back only these (pages free for a while), so pages a
    // program frees and soon reuses are not faulted in again.
    uint64_t aged_map[k_chunk_pages / 64];
    uint32_t map[k_chunk_pages];
    // Per page, the blocks carried from earlier requests (an untraced
    // request heap, Heap::mark_carried): one bit per 8 bytes (every slot
    // starts on one), set at a carried block's start. Taken from the pool
    // (carried_bits_pool) at the chunk's first carried block, given back
    // when the chunk leaves its heap (Heap::drop_carried). Null with
    // has_carried: memory ran out, and every block of a marked page counts
    // as carried (its free asks the table, on the slow path).
    // The words of page p are carried_bits[p * k_carried_words ...]: the
    // word of address a is (a >> 9) of the chunk, its bit (a >> 3) % 64.
    static constexpr unsigned k_carried_words = k_page_size / 8 / 64;
    uint64_t* carried_bits;
    bool has_carried;
    // Made of a freed huge block's mapping (Heap::chunk_from_cached_huge):
    // a free of the chunk's own address is that block's second free, for
    // as long as the chunk is mapped (cached and reused too; unmapped, the
    // registry says huge_freed there, as for the block's own mapping).
    bool was_huge_block;
    static size_t carried_word(uintptr_t a) { return (a >> 9) & (k_chunk_pages * k_carried_words - 1); }
    static uint64_t carried_mask(uintptr_t a) { return uint64_t{1} << ((a >> 3) & 63); }
    bool carried_has(uintptr_t a) const { return !carried_bits || ((carried_bits[carried_word(a)] >> ((a >> 3) & 63)) & 1); }

    static Chunk* of(const void* p) {
        return reinterpret_cast<Chunk*>(reinterpret_cast<uintptr_t>(p) & ~(k_chunk_size - 1));
    }
    static unsigned page_of(const void* p) {
        return static_cast<unsigned>((reinterpret_cast<uintptr_t>(p) >> 12) & (k_chunk_pages - 1));
    }
    char* page_address(unsigned page) { return reinterpret_cast<char*>(this) + page * k_page_size; }

    // Sets up an empty chunk (all pages free but the header). Its pages are
    // fresh from mmap (not resident), kept as they were (a cached chunk), or
    // all possibly resident (blocks released wholesale).
    enum class Pages { fresh, keep, all_dirty };
    void init(Heap* owner, uint32_t number, Pages pages);

    bool page_used(unsigned page) const { return (free_map[page >> 6] >> (page & 63)) & 1; }
    bool pages_free(unsigned first, unsigned count) const;
    // Both return how many of the pages changed dirty state (used: dirty
    // pages reused; free: pages that become dirty), for the heap's count.
    unsigned mark_used(unsigned first, unsigned count);
    unsigned mark_free(unsigned first, unsigned count);
    unsigned dirty_count() const;

    // Best fit over free_map: the first page of the smallest free run of at
    // least `count` pages (an exact fit wins at once), or 0 if none.
    unsigned find_run(unsigned count) const;
    // As find_run, but the run's first page is a multiple of `align_pages`.
    unsigned find_aligned_run(unsigned count, unsigned align_pages) const;

    bool empty() const { return free_pages == k_chunk_pages - 1; }

    // Checks the header against itself (free_map vs map vs free_pages); for
    // tests and ZMM_DEBUG. Returns nullptr or a description of the first fault.
    const char* check() const;
};

static_assert(sizeof(Chunk) <= k_page_size, "the chunk header must fit page 0");

// The chunks' carried bits (k_carried_bits_bytes each, zeroed) come from
// one process-wide pool: internal mappings of 64 at a time (one tracked
// mapping each, however many chunks carry blocks), given back to the pool,
// never unmapped. take: nullptr if memory ran out.
namespace carried_bits_pool {
uint64_t* take();
void give(uint64_t* bits);
void before_fork();
void after_fork_parent();
void after_fork_child();
}  // namespace carried_bits_pool

}  // namespace zmm
