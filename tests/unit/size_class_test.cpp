// The bin table against ZendMM's (zend_alloc_sizes.h, ZENDMM.md 1.2), written
// out here independently of ZMM_BINS, and zmm's size → bin mapping.
#include <boost/test/unit_test.hpp>

#include "chunk.hpp"
#include "size_class.hpp"

using namespace zmm;

namespace {
struct Zend_bin {
    unsigned size, count, pages;
};
// ZendMM's ZEND_MM_BINS_INFO, as PHP 8.2 has it.
const Zend_bin k_zend[30] = {
    {8, 512, 1},    {16, 256, 1},   {24, 170, 1},   {32, 128, 1},  {40, 102, 1},  {48, 85, 1},
    {56, 73, 1},    {64, 64, 1},    {80, 51, 1},    {96, 42, 1},   {112, 36, 1},  {128, 32, 1},
    {160, 25, 1},   {192, 21, 1},   {224, 18, 1},   {256, 16, 1},  {320, 64, 5},  {384, 32, 3},
    {448, 9, 1},    {512, 8, 1},    {640, 32, 5},   {768, 16, 3},  {896, 9, 2},   {1024, 8, 2},
    {1280, 16, 5},  {1536, 8, 3},   {1792, 16, 7},  {2048, 8, 4},  {2560, 8, 5},  {3072, 4, 3},
};
}  // namespace

BOOST_AUTO_TEST_SUITE(size_classes)

BOOST_AUTO_TEST_CASE(table_matches_zendmm) {
    BOOST_REQUIRE_EQUAL(k_zendmm_bins, 30u);
    BOOST_REQUIRE_EQUAL(k_bin_size[k_zendmm_bins - 1], k_zendmm_max_small);
    for (unsigned b = 0; b < k_zendmm_bins; ++b) {
        BOOST_TEST_CONTEXT("bin " << b) {
            BOOST_TEST(k_bin_size[b] == k_zend[b].size);
            BOOST_TEST(k_bin_count[b] == k_zend[b].count);
            BOOST_TEST(k_bin_pages[b] == k_zend[b].pages);
        }
    }
}

// zmm's two bins past ZendMM's (size_class.hpp): a page, and 4608 B slots
// packed in 9 pages; sizes up to 4608 are small.
BOOST_AUTO_TEST_CASE(bins_past_zendmms) {
    BOOST_REQUIRE_EQUAL(k_bins, 32u);
    BOOST_TEST(k_max_small == 4608u);
    BOOST_TEST(k_bin_size[30] == 4096u);
    BOOST_TEST(k_bin_count[30] == 1u);
    BOOST_TEST(k_bin_pages[30] == 1u);
    BOOST_TEST(k_bin_size[31] == 4608u);
    BOOST_TEST(k_bin_count[31] == 8u);
    BOOST_TEST(k_bin_pages[31] == 9u);
    BOOST_TEST(k_bin_count[31] * k_bin_size[31] == k_bin_pages[31] * k_page_size);  // no tail
}

BOOST_AUTO_TEST_CASE(zendmm_mapping_is_the_table) {
    // ZendMM's formula sends each size to the smallest bin that holds it.
    for (size_t s = 0; s <= k_zendmm_max_small; ++s) {
        unsigned b = zendmm_size_to_bin(s);
        BOOST_TEST_REQUIRE(b < k_bins);
        BOOST_TEST_REQUIRE(k_bin_size[b] >= (s ? s : 1));
        if (b > 0) BOOST_TEST_REQUIRE(k_bin_size[b - 1] < s);
    }
}

BOOST_AUTO_TEST_CASE(zmm_mapping_is_16_aligned_and_smallest) {
    for (size_t s = 0; s <= k_max_small; ++s) {
        unsigned b = size_to_bin(s);
        BOOST_TEST_CONTEXT("size " << s) {
            BOOST_TEST_REQUIRE(b < k_bins);
            BOOST_TEST_REQUIRE(k_bin_size[b] >= s);
            BOOST_TEST_REQUIRE(k_bin_size[b] % 16 == 0);
            // no smaller 16-aligned bin would do
            for (unsigned c = 0; c < b; ++c)
                BOOST_TEST_REQUIRE(!(k_bin_size[c] >= s && k_bin_size[c] % 16 == 0));
        }
    }
    // The documented differences from ZendMM.
    BOOST_TEST(size_to_bin(0) == 1u);
    BOOST_TEST(size_to_bin(8) == 1u);
    BOOST_TEST(size_to_bin(24) == 3u);
    BOOST_TEST(size_to_bin(40) == 5u);
    BOOST_TEST(size_to_bin(56) == 7u);
    BOOST_TEST(size_to_bin(3072) == 29u);
    BOOST_TEST(size_to_bin(3073) == 30u);
    BOOST_TEST(size_to_bin(4096) == 30u);
    BOOST_TEST(size_to_bin(4097) == 31u);
    BOOST_TEST(size_to_bin(4608) == 31u);
}

BOOST_AUTO_TEST_CASE(slot_start_test_is_exact) {
    // Every offset of every run: a slot start iff a multiple of the size
    // below count * size (the run's unused tail is not a slot).
    for (unsigned b = 0; b < k_bins; ++b) {
        size_t run = size_t{k_bin_pages[b]} * k_page_size;
        for (uint64_t off = 0; off < run; ++off) {
            bool expect = off % k_bin_size[b] == 0 && off / k_bin_size[b] < k_bin_count[b];
            if (is_slot_start(off, b) != expect) {
                BOOST_FAIL("bin " << b << " offset " << off << ": expected " << expect);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(slot_start_test_holds_up_to_its_bound) {
    // Any offset below 2^32: the multiples of the size up to the last slot
    // and nothing else (a sample: every multiple's neighbourhood, strided).
    for (unsigned b = 0; b < k_bins; ++b) {
        const uint64_t size = k_bin_size[b];
        for (uint64_t off = 0; off < k_slot_offset_bound; off += size * 4093) {
            for (uint64_t x = off > size ? off - size : 0; x < off + size && x < k_slot_offset_bound; ++x) {
                bool expect = x % size == 0 && x / size < k_bin_count[b];
                if (is_slot_start(x, b) != expect) BOOST_FAIL("bin " << b << " offset " << x);
            }
        }
        uint64_t top = k_slot_offset_bound - 1;
        if (is_slot_start(top - top % size, b)) BOOST_FAIL("bin " << b << ": the bound's last multiple");
    }
}

BOOST_AUTO_TEST_SUITE_END()
