// Size classes: ZendMM's 30 small bins and two of zmm's, from one table.
//
// ZMM_BINS is the single source of the bin table (ZendMM's ZEND_MM_BINS_INFO,
// zend_alloc_sizes.h): number, slot size, slots per run, pages per run. The
// tables below, the unit tests and the statistics all read it.
//
// A deliberate difference from ZendMM in the table: bins 30 (4096 B, one
// page) and 31 (4608 B, 8 slots in 9 pages, no tail) take 3073..4608 B,
// which ZendMM serves as large runs of whole pages. Programs that are not
// PHP allocate "a 4 KiB page plus a header" all the time (SQLite's page
// cache: 4104 and 4368 B; I/O buffers): as a 2-page run each such block
// wasted half its memory (`sqlite3` on tests/bench/alloc.sql, 200000 rows:
// 244 MB peak RSS where glibc takes 153 MB). 3073..4096 B take one page as
// before, from a bin now (the fast path, no run search). Large runs start at
// 4609 B.
//
// The other deliberate differences from ZendMM are in the mapping from
// request size to bin, not in the table:
//  * x86-64 programs and compilers assume that malloc and operator new return
//    16-byte aligned memory for any size of 16 or more. ZendMM's 24-, 40- and
//    56-byte slots are only 8-aligned, so zmm serves 17..24 from the 32-byte
//    bin, 33..40 and 41..48 from the 48-byte bin, 49..56 from the 64-byte bin.
//  * every free slot carries its link and a shadow of it (ZendMM 8.4's heap
//    protection), which needs 16 bytes, so 0..8 is served from the 16-byte bin
//    (as ZendMM 8.4 does with ZEND_MM_MIN_USEABLE_BIN_SIZE).
// Bins 0, 2, 4 and 6 stay in the table (its shape is ZendMM's, and the tests
// compare it) but no size maps to them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm {

inline constexpr size_t k_page_size = 4096;
inline constexpr size_t k_chunk_size = size_t{2} << 20;
inline constexpr size_t k_chunk_pages = k_chunk_size / k_page_size;
inline constexpr size_t k_max_small = 4608;
inline constexpr size_t k_max_large = k_chunk_size - k_page_size;
inline constexpr size_t k_min_alignment = 16;

//        num  size count pages
#define ZMM_BINS(X)      \
    X(0, 8, 512, 1)      \
    X(1, 16, 256, 1)     \
    X(2, 24, 170, 1)     \
    X(3, 32, 128, 1)     \
    X(4, 40, 102, 1)     \
    X(5, 48, 85, 1)      \
    X(6, 56, 73, 1)      \
    X(7, 64, 64, 1)      \
    X(8, 80, 51, 1)      \
    X(9, 96, 42, 1)      \
    X(10, 112, 36, 1)    \
    X(11, 128, 32, 1)    \
    X(12, 160, 25, 1)    \
    X(13, 192, 21, 1)    \
    X(14, 224, 18, 1)    \
    X(15, 256, 16, 1)    \
    X(16, 320, 64, 5)    \
    X(17, 384, 32, 3)    \
    X(18, 448, 9, 1)     \
    X(19, 512, 8, 1)     \
    X(20, 640, 32, 5)    \
    X(21, 768, 16, 3)    \
    X(22, 896, 9, 2)     \
    X(23, 1024, 8, 2)    \
    X(24, 1280, 16, 5)   \
    X(25, 1536, 8, 3)    \
    X(26, 1792, 16, 7)   \
    X(27, 2048, 8, 4)    \
    X(28, 2560, 8, 5)    \
    X(29, 3072, 4, 3)    \
    X(30, 4096, 1, 1)    \
    X(31, 4608, 8, 9)

inline constexpr unsigned k_bins = 32;
inline constexpr unsigned k_zendmm_bins = 30;  // ZendMM's, the first of the table
inline constexpr size_t k_zendmm_max_small = 3072;

#define ZMM_BIN_SIZE(num, size, count, pages) size,
#define ZMM_BIN_COUNT(num, size, count, pages) count,
#define ZMM_BIN_PAGES(num, size, count, pages) pages,
inline constexpr uint32_t k_bin_size[k_bins] = {ZMM_BINS(ZMM_BIN_SIZE)};
inline constexpr uint32_t k_bin_count[k_bins] = {ZMM_BINS(ZMM_BIN_COUNT)};
inline constexpr uint32_t k_bin_pages[k_bins] = {ZMM_BINS(ZMM_BIN_PAGES)};
#undef ZMM_BIN_SIZE
#undef ZMM_BIN_COUNT
#undef ZMM_BIN_PAGES

// ZendMM's own size-to-bin function (zend_mm_small_size_to_bin), kept for the
// tests that compare the table with it and for the documentation of the shape.
constexpr unsigned zendmm_size_to_bin(size_t size) {
    if (size <= 64) return static_cast<unsigned>((size - (size != 0)) >> 3);
    size_t t1 = size - 1;
    unsigned t2 = static_cast<unsigned>(64 - __builtin_clzll(t1)) - 3;
    t1 = t1 >> t2;
    t2 = t2 - 3;
    t2 = t2 << 2;
    return static_cast<unsigned>(t1 + t2);
}

// zmm's mapping: the smallest bin whose slots are 16-aligned and large enough.
constexpr unsigned zmm_size_to_bin_slow(size_t size) {
    for (unsigned b = 0; b < k_bins; ++b)
        if (k_bin_size[b] >= size && k_bin_size[b] % k_min_alignment == 0) return b;
    return k_bins;
}

// One byte per request size (4.5 KiB): the hot path's size-to-bin is a single
// load, indexed by the size itself.
struct Bin_lookup {
    uint8_t bin[k_max_small + 1];
};
constexpr Bin_lookup make_bin_lookup() {
    Bin_lookup t{};
    for (size_t s = 0; s <= k_max_small; ++s) t.bin[s] = static_cast<uint8_t>(zmm_size_to_bin_slow(s));
    t.bin[0] = 1;
    return t;
}
inline constexpr Bin_lookup k_bin_lookup = make_bin_lookup();

inline unsigned size_to_bin(size_t size) { return k_bin_lookup.bin[size]; }

// Slot arithmetic without a division, for telling a slot's start from an
// interior pointer (or a pointer into a run's unused tail) on free: one
// multiplication and one comparison (Lemire, Kaser and Kurz, "Faster
// remainder by direct computation", 2019). With c = floor(2^64 / size) + 1
// and e = c * size - 2^64 (1 <= e <= size), x * c mod 2^64 is k * e when x
// is k * size, and at least c otherwise, for every x < 2^32; so
// x * c <= (count - 1) * e says "x is the start of one of the run's slots".
// (UINT64_MAX / size + 1 is that c but for a power of two, where it is
// 2^64 / size exactly and e would be 0.)
struct Slot_divisor {
    uint64_t multiplier;
    uint64_t limit;
};
inline constexpr uint64_t k_slot_offset_bound = uint64_t{1} << 32;  // the test holds below it
struct Divisor_table {
    Slot_divisor d[k_bins];
};
constexpr Divisor_table make_divisors() {
    Divisor_table t{};
    for (unsigned b = 0; b < k_bins; ++b) {
        uint64_t size = k_bin_size[b];
        uint64_t c = UINT64_MAX / size + 1 + ((size & (size - 1)) == 0 ? 1 : 0);
        uint64_t e = c * size;  // mod 2^64
        t.d[b] = {c, (k_bin_count[b] - 1) * e};
    }
    return t;
}
inline constexpr Divisor_table k_divisors = make_divisors();
constexpr bool divisors_are_exact_bounds() {
    for (unsigned b = 0; b < k_bins; ++b) {
        uint64_t size = k_bin_size[b], c = k_divisors.d[b].multiplier, e = c * size;
        // e in [1, size]; the limit below c (a non-multiple's least product);
        // k * e + r * c (x = k * size + r) does not wrap below the bound
        if (e == 0 || e > size || k_divisors.d[b].limit >= c || UINT64_MAX / size <= size + k_slot_offset_bound)
            return false;
    }
    return true;
}
static_assert(divisors_are_exact_bounds());

// `offset_in_run` < k_slot_offset_bound.
inline bool is_slot_start(uint64_t offset_in_run, unsigned bin) {
    const Slot_divisor& d = k_divisors.d[bin];
    return offset_in_run * d.multiplier <= d.limit;
}

static_assert(k_bin_size[k_bins - 1] == k_max_small);
static_assert(size_t{k_bin_count[16]} * k_bin_size[16] <= k_bin_pages[16] * k_page_size);
constexpr bool bins_fit_their_runs() {
    for (unsigned b = 0; b < k_bins; ++b)
        if (size_t{k_bin_count[b]} * k_bin_size[b] > k_bin_pages[b] * k_page_size ||
            size_t{k_bin_count[b] + 1} * k_bin_size[b] <= k_bin_pages[b] * k_page_size)
            return false;
    return true;
}
static_assert(bins_fit_their_runs(), "count must be pages * 4096 / size");
constexpr bool lookup_is_aligned_and_fits() {
    for (size_t s = 0; s <= k_max_small; ++s) {
        unsigned b = k_bin_lookup.bin[s];
        if (b >= k_bins || k_bin_size[b] < s || k_bin_size[b] % 16 != 0) return false;
        if (b > 1 && k_bin_size[b - 1] >= s && k_bin_size[b - 1] % 16 == 0) return false;
    }
    return true;
}
static_assert(lookup_is_aligned_and_fits());

// A sized delete's size, claimed for a block of bin b, fits when
// size_to_bin(size) is b: the sizes of bin b are one range, and the test is
// `size - low <= span` (unsigned: one subtraction and one comparison, on any
// size_t, where the lookup needs size <= k_max_small first). The bins zmm
// does not serve (8, 24, 40, 56: not 16-aligned) have no size; their range
// is SIZE_MAX alone, which no block of theirs (there are none) is claimed with.
struct Size_claim {
    uint64_t low;
    uint64_t span;
};
struct Size_claim_table {
    Size_claim c[k_bins];
};
constexpr Size_claim_table make_size_claims() {
    Size_claim_table t{};
    for (unsigned b = 0; b < k_bins; ++b) t.c[b] = {UINT64_MAX, 0};
    for (size_t s = k_max_small + 1; s-- > 0;) {
        Size_claim& c = t.c[k_bin_lookup.bin[s]];
        c.span = c.low == UINT64_MAX ? 0 : c.span + 1;
        c.low = s;
    }
    return t;
}
inline constexpr Size_claim_table k_size_claims = make_size_claims();
constexpr bool claims_match_lookup() {
    for (unsigned b = 0; b < k_bins; ++b)
        for (size_t s = 0; s <= k_max_small + 1; ++s) {
            bool fits = s - k_size_claims.c[b].low <= k_size_claims.c[b].span;
            if (fits != (s <= k_max_small && k_bin_lookup.bin[s] == b)) return false;
        }
    return true;
}
static_assert(claims_match_lookup(), "each bin's sizes must be one range");

}  // namespace zmm
