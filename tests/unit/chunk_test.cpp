// The chunk header: free_map and page map after random sequences of large
// allocations and frees, checked against a simple model; best fit.
#include <boost/test/unit_test.hpp>

#include <map>
#include <vector>

#include "chunk.hpp"
#include "os.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Rng;
using zmm::test::Test_heap;

namespace {
struct Scratch_chunk {
    Chunk* c;
    Scratch_chunk() {
        c = static_cast<Chunk*>(os::map_aligned(k_chunk_size, k_chunk_size));
        c->init(nullptr, 0, Chunk::Pages::fresh);
    }
    ~Scratch_chunk() { os::unmap_heap(c, k_chunk_size); }
};
}  // namespace

BOOST_AUTO_TEST_SUITE(chunk)

BOOST_AUTO_TEST_CASE(empty_chunk) {
    Scratch_chunk s;
    BOOST_TEST(s.c->free_pages == 511u);
    BOOST_TEST(s.c->empty());
    BOOST_TEST(s.c->page_used(0));
    BOOST_TEST(!s.c->page_used(1));
    BOOST_TEST(s.c->find_run(511) == 1u);
    BOOST_TEST(s.c->find_run(512) == 0u);
    BOOST_TEST(s.c->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(best_fit_prefers_exact_then_smallest) {
    Scratch_chunk s;
    Chunk* c = s.c;
    // used: 1..9, free 10..14 (5), used 15..19, free 20..22 (3), used 23..511
    c->mark_used(1, 9);
    c->mark_used(15, 5);
    c->mark_used(23, 489);
    BOOST_TEST(c->find_run(3) == 20u);  // exact
    BOOST_TEST(c->find_run(2) == 20u);  // smallest that fits
    BOOST_TEST(c->find_run(4) == 10u);
    BOOST_TEST(c->find_run(5) == 10u);
    BOOST_TEST(c->find_run(6) == 0u);
    BOOST_TEST(c->find_aligned_run(2, 4) == 12u);  // first fit: 12..13 inside 10..14
    BOOST_TEST(c->find_aligned_run(3, 4) == 12u);
    BOOST_TEST(c->find_aligned_run(4, 4) == 0u);
    BOOST_TEST(c->find_aligned_run(2, 8) == 0u);  // 8 and 16 are used, 24 too
    BOOST_TEST(c->pages_free(10, 5));
    BOOST_TEST(!c->pages_free(10, 6));
    BOOST_TEST(!c->pages_free(510, 4));  // past the end
}

BOOST_AUTO_TEST_CASE(bitmap_runs_across_words) {
    Scratch_chunk s;
    Chunk* c = s.c;
    c->mark_used(60, 70);  // spans words 0..2
    for (unsigned p = 1; p < 512; ++p) BOOST_TEST_REQUIRE(c->page_used(p) == (p >= 60 && p < 130));
    BOOST_TEST(c->free_pages == 511u - 70u);
    c->mark_free(60, 70);
    BOOST_TEST(c->empty());
}

// Random large allocations and frees; after every step the heap's chunks
// must agree with the model of live runs, and with themselves.
BOOST_AUTO_TEST_CASE(random_large_runs_match_model) {
    Test_heap h;
    Rng rng(42);
    std::map<char*, unsigned> live;  // block -> pages
    for (int step = 0; step < 4000; ++step) {
        bool do_alloc = live.empty() || rng.below(100) < 55;
        if (do_alloc) {
            size_t bytes = k_max_small + 1 + rng.below(rng.below(4) == 0 ? 1500000 : 64 * 1024);
            char* p = static_cast<char*>(h->alloc(bytes));
            BOOST_TEST_REQUIRE(p != nullptr);
            BOOST_TEST_REQUIRE((reinterpret_cast<uintptr_t>(p) & (k_page_size - 1)) == 0u);
            unsigned pages = static_cast<unsigned>((bytes + k_page_size - 1) / k_page_size);
            BOOST_TEST_REQUIRE(Heap::usable_size(p) == size_t{pages} * k_page_size);
            // no overlap with any live run
            // (addresses as integers: Boost.Test compares char* as strings)
            auto at = [](const char* q) { return reinterpret_cast<uintptr_t>(q); };
            auto next = live.lower_bound(p);
            if (next != live.end()) BOOST_TEST_REQUIRE(at(p) + size_t{pages} * k_page_size <= at(next->first));
            if (next != live.begin()) {
                auto prev = std::prev(next);
                BOOST_TEST_REQUIRE(at(prev->first) + size_t{prev->second} * k_page_size <= at(p));
            }
            p[0] = 1;
            p[size_t{pages} * k_page_size - 1] = 2;
            live[p] = pages;
        } else {
            auto it = live.begin();
            std::advance(it, static_cast<long>(rng.below(live.size())));
            h->free_owned(it->first);
            live.erase(it);
        }
        if (step % 50 == 0 || live.size() < 3) {
            BOOST_TEST_REQUIRE(h->check() == nullptr);
            // model: pages in use per chunk
            std::map<Chunk*, std::vector<bool>> model;
            for (auto& [p, pages] : live) {
                auto& v = model[Chunk::of(p)];
                v.resize(k_chunk_pages);
                for (unsigned i = 0; i < pages; ++i) v[Chunk::page_of(p) + i] = true;
            }
            size_t chunks = 0;
            if (Chunk* c = h->chunks) {
                do {
                    ++chunks;
                    auto& v = model[c];
                    v.resize(k_chunk_pages);
                    for (unsigned pg = 1; pg < k_chunk_pages; ++pg)
                        BOOST_TEST_REQUIRE(c->page_used(pg) == v[pg]);
                    c = c->next;
                } while (c != h->chunks);
            }
            BOOST_TEST_REQUIRE(chunks == h->chunks_count);
            size_t expect_size = 0;
            for (auto& [p, pages] : live) expect_size += size_t{pages} * k_page_size;
            BOOST_TEST_REQUIRE(h->usage() == expect_size);
        }
    }
    for (auto& [p, pages] : live) h->free_owned(p);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->chunks_count == 0u);  // empty chunks left the list
    BOOST_TEST(h->cached_count <= g_tuning.cached_chunks);
}

BOOST_AUTO_TEST_CASE(large_realloc_in_place) {
    Test_heap h;
    char* p = static_cast<char*>(h->alloc(8 * k_page_size));
    for (size_t i = 0; i < 8 * k_page_size; ++i) p[i] = static_cast<char>(i * 7);
    // grow into free pages after it
    char* q = static_cast<char*>(h->realloc(p, 20 * k_page_size));
    BOOST_TEST(static_cast<void*>(q) == static_cast<void*>(p));
    BOOST_TEST(Heap::usable_size(q) == 20 * k_page_size);
    // shrink in place
    q = static_cast<char*>(h->realloc(q, 5 * k_page_size));
    BOOST_TEST(static_cast<void*>(q) == static_cast<void*>(p));
    BOOST_TEST(Heap::usable_size(q) == 5 * k_page_size);
    for (size_t i = 0; i < 5 * k_page_size; ++i) BOOST_TEST_REQUIRE(q[i] == static_cast<char>(i * 7));
    // a block right after it blocks growth: realloc moves and keeps content
    char* wall = static_cast<char*>(h->alloc(k_page_size * 2));
    BOOST_TEST(static_cast<void*>(wall) == static_cast<void*>(p + 5 * k_page_size));
    char* r = static_cast<char*>(h->realloc(q, 40 * k_page_size));
    BOOST_TEST(static_cast<void*>(r) != static_cast<void*>(p));
    for (size_t i = 0; i < 5 * k_page_size; ++i) BOOST_TEST_REQUIRE(r[i] == static_cast<char>(i * 7));
    BOOST_TEST(h->check() == nullptr);
    h->free_owned(r);
    h->free_owned(wall);
    BOOST_TEST(h->usage() == 0u);
}

BOOST_AUTO_TEST_CASE(small_page_words_give_offsets_in_the_run) {
    // Every bin, every place its run can start, every page of the run, a
    // few addresses of each page, in chunks at odd and even 2 MiB steps
    // (bit 21 of the address takes no part): the word gives the bin, the
    // run's first page, the address's offset in the run; with the slow-free
    // flag the same, and the fast path's offset is never a slot.
    const uintptr_t bases[] = {uintptr_t{0x7f0000000000}, uintptr_t{0x7f0000200000}};
    for (unsigned b = 0; b < k_bins; ++b) {
        for (unsigned first = 1; first + k_bin_pages[b] <= k_chunk_pages; ++first) {
            const uint32_t word = small_page_word(b, first);
            const uint32_t slow = with_slow_free(word);
            BOOST_TEST_REQUIRE((word & k_small) != 0);
            BOOST_TEST_REQUIRE(small_bin(word) == b);
            BOOST_TEST_REQUIRE(small_bin(slow) == b);
            BOOST_TEST_REQUIRE(small_run_first_page(word) == first);
            BOOST_TEST_REQUIRE(small_run_first_page(slow) == first);
            BOOST_TEST_REQUIRE((slow & k_small_slow_free) != 0);
            BOOST_TEST_REQUIRE(with_slow_free(slow) == slow);
            BOOST_TEST_REQUIRE(without_slow_free(slow) == word);
            BOOST_TEST_REQUIRE(without_slow_free(word) == word);
            for (uintptr_t base : bases) {
                for (unsigned i = 0; i < k_bin_pages[b]; ++i) {
                    const uint64_t in_pages[] = {0, 8, k_bin_size[b] % k_page_size, k_page_size - 8};
                    for (uint64_t in_page : in_pages) {
                        const uint64_t offset = uint64_t{i} * k_page_size + in_page;
                        const uintptr_t a = base + uint64_t{first} * k_page_size + offset;
                        BOOST_TEST_REQUIRE(offset_in_run(a, word) == offset);
                        BOOST_TEST_REQUIRE(offset_in_run(a, slow) == offset);
                        BOOST_TEST_REQUIRE(fast_offset_in_run(a, word) == offset);
                        BOOST_TEST_REQUIRE(!is_slot_start(fast_offset_in_run(a, slow), b));
                    }
                }
            }
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
