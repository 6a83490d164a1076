// What a request does with a heap: enumerate its live blocks (the leaks),
// merge what is left into the thread's persistent heap, trace blocks.
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "block_table.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Rng;
using zmm::test::Test_heap;

namespace {
std::map<void*, size_t> live_of(Heap& h) {
    std::map<void*, size_t> out;
    h.for_each_live_block(
        [](void* ctx, void* block, size_t size) { (*static_cast<std::map<void*, size_t>*>(ctx))[block] = size; },
        &out);
    return out;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(request_heap)

BOOST_AUTO_TEST_CASE(live_blocks_are_exactly_the_unfreed_ones) {
    Test_heap h;
    Rng rng(5);
    std::map<void*, size_t> expect;
    std::vector<void*> all;
    for (int i = 0; i < 5000; ++i) {
        size_t size = rng.below(30) == 0 ? 4000 + rng.below(200000) : 1 + rng.below(3072);
        if (i % 1000 == 0) size = 3 * 1024 * 1024;
        void* p = h->alloc(size);
        all.push_back(p);
        expect[p] = Heap::usable_size(p);
    }
    for (size_t i = 0; i < all.size(); ++i)
        if (rng.below(3) != 0) {
            h->free_owned(all[i]);
            expect.erase(all[i]);
        }
    BOOST_TEST(live_of(h.heap) == expect);
    size_t bytes = 0;
    for (auto& [p, size] : expect) bytes += size;
    BOOST_TEST(h->usage() == bytes);
}

BOOST_AUTO_TEST_CASE(an_empty_heap_has_no_live_blocks) {
    Test_heap h;
    std::vector<void*> all;
    for (int i = 0; i < 1000; ++i) all.push_back(h->alloc(1 + i % 3000));
    for (void* p : all) h->free_owned(p);
    BOOST_TEST(live_of(h.heap).empty());
}

BOOST_AUTO_TEST_CASE(merge_moves_leaks_and_keeps_them_valid) {
    Test_heap persistent;
    Test_heap request;
    void* before = persistent->alloc(100);
    std::vector<void*> leaks, freed;
    for (int i = 0; i < 3000; ++i) {
        void* p = request->alloc(16 + (i % 100) * 16);
        (i % 10 == 0 ? leaks : freed).push_back(p);
    }
    void* big = request->alloc(50000);
    void* huge = request->alloc(5 * 1024 * 1024);
    leaks.push_back(big);
    leaks.push_back(huge);
    for (void* p : freed) request->free_owned(p);
    size_t leaked = request->usage();
    request->merge_into(persistent.heap);
    BOOST_TEST(request->usage() == 0u);
    BOOST_TEST(request->chunks_count == 0u);
    BOOST_TEST(request->huge == nullptr);
    BOOST_TEST(persistent->usage() == leaked + 112u);
    for (void* p : leaks) BOOST_TEST_REQUIRE(Heap::owner_of(p) == &persistent.heap);
    BOOST_TEST(persistent->check() == nullptr);
    // the program may still free a leaked block later: it is persistent now
    for (void* p : leaks) persistent->free_owned(p);
    persistent->free_owned(before);
    BOOST_TEST(persistent->usage() == 0u);
    BOOST_TEST(persistent->check() == nullptr);
    // the merged free lists serve the persistent heap
    std::vector<void*> again;
    for (int i = 0; i < 3000; ++i) again.push_back(persistent->alloc(16 + (i % 100) * 16));
    BOOST_TEST(persistent->check() == nullptr);
    for (void* p : again) persistent->free_owned(p);
}

BOOST_AUTO_TEST_CASE(a_clean_request_leaves_only_cached_chunks) {
    Test_heap persistent;
    Test_heap request;
    std::vector<void*> all;
    for (int i = 0; i < 20000; ++i) all.push_back(request->alloc(1 + i % 3072));
    for (void* p : all) request->free_owned(p);
    request->merge_into(persistent.heap);
    BOOST_TEST(persistent->chunks_count == 0u);
    BOOST_TEST(request->chunks_count == 0u);
    BOOST_TEST(request->cached_count >= 1u);
    request->trim_cache(1);
    BOOST_TEST(request->cached_count == 1u);
    BOOST_TEST(request->real_size == k_chunk_size);
}

BOOST_AUTO_TEST_CASE(late_remote_frees_reach_the_merged_heap) {
    Test_heap persistent;
    Test_heap request;
    void* p = request->alloc(64);
    void* keep = request->alloc(64);
    request->merge_into(persistent.heap);
    // another thread read the old owner before the merge and pushes there
    char other = 0;
    Heap::free_remote(&request.heap, p);
    (void)other;
    BOOST_TEST(persistent->has_remote());  // through the retired request heap
    persistent->drain_remote();
    BOOST_TEST(persistent->usage() == 64u);
    persistent->free_owned(keep);
    BOOST_TEST(persistent->usage() == 0u);
    persistent->retired = nullptr;  // the request heap dies first in this test
}

BOOST_AUTO_TEST_CASE(block_table_insert_find_erase) {
    Block_table t;
    Rng rng(11);
    std::map<uintptr_t, uint64_t> model;
    for (int i = 0; i < 100000; ++i) {
        uintptr_t a = (rng.below(50000) + 1) * 16;
        if (rng.below(3) == 0) {
            BOOST_TEST_REQUIRE(t.erase(a) == (model.erase(a) == 1));
        } else {
            uint64_t size = rng.next();
            BOOST_TEST_REQUIRE(t.insert({a, size, static_cast<uint32_t>(i), 0}));
            model[a] = size;
        }
    }
    BOOST_TEST(t.size() == model.size());
    for (auto& [a, size] : model) {
        const Block_info* b = t.find(a);
        BOOST_TEST_REQUIRE(b != nullptr);
        BOOST_TEST_REQUIRE(b->size == size);
    }
    size_t seen = 0;
    t.for_each([&](const Block_info& b) {
        ++seen;
        BOOST_TEST_REQUIRE(model.count(b.address) == 1u);
    });
    BOOST_TEST(seen == model.size());
}

BOOST_AUTO_TEST_CASE(traced_heap_forgets_freed_blocks) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    void* a = h->alloc(100);
    void* b = h->alloc(100000);
    table.insert({reinterpret_cast<uintptr_t>(a), 100, 1, 0});
    table.insert({reinterpret_cast<uintptr_t>(b), 100000, 2, 0});
    h->free_owned(a);
    BOOST_TEST(table.find(reinterpret_cast<uintptr_t>(a)) == nullptr);
    char other = 0;
    (void)other;
    Heap::free_remote(&h.heap, b);
    h->drain_remote();
    BOOST_TEST(table.size() == 0u);
    h->blocks = nullptr;
}

// A request end's walk of its own runs: every block the running request
// left, in whichever bin, with carried blocks of earlier requests about
// (freed or not); nothing at all once the request freed all its own.
BOOST_AUTO_TEST_CASE(own_runs_walk_finds_the_request_s_own_blocks) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    char token = 0;
    h->request = &token;  // (core asks only whether there is one)
    Rng rng(11);
    // Request 1 leaves blocks of three bins, and a large one: carried.
    std::vector<void*> carried;
    for (size_t size : {24, 40, 72, 24, 5000}) carried.push_back(h->alloc(size));
    for (void* p : carried) {
        BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(p), Heap::usable_size(p), 0, k_block_carried}));
        h->mark_carried(p);
    }
    h->reset_for_request(SIZE_MAX);
    auto own_walk = [&] {
        std::set<void*> out;
        h->for_each_live_block(
            [](void* ctx, void* block, size_t) { static_cast<std::set<void*>*>(ctx)->insert(block); }, &out, true);
        return out;
    };
    // Request 2: a clean one (a carried block freed, one moved by realloc).
    std::vector<void*> mine;
    for (int i = 0; i < 2000; ++i) mine.push_back(h->alloc(1 + rng.below(3072)));
    h->free_owned(carried[1]);
    carried[1] = nullptr;
    carried[2] = h->realloc(carried[2], 300);  // moved: now the request's own
    mine.push_back(carried[2]);
    carried[2] = nullptr;
    for (void* p : mine) h->free_owned(p);
    mine.clear();
    BOOST_TEST(h->size_in_request() == 0u);
    BOOST_TEST(own_walk().empty());
    // Its leaks: one in a bin of carried blocks, one in the bin of the
    // carried block freed, one alone, one large.
    for (int i = 0; i < 500; ++i) mine.push_back(h->alloc(1 + rng.below(3072)));
    void* leak_with_carried = h->alloc(24);
    void* leak_alone = h->alloc(40);
    void* leak_large = h->alloc(20000);
    for (void* p : mine) h->free_owned(p);
    std::set<void*> seen = own_walk();
    for (void* p : {leak_with_carried, leak_alone, leak_large}) BOOST_TEST(seen.count(p) == 1u);
    // The small carried blocks are skipped by their chunk's bits, unread.
    for (void* p : {carried[0], carried[3]}) BOOST_TEST(seen.count(p) == 0u);
    for (void* p : seen)
        BOOST_TEST((p == leak_with_carried || p == leak_alone || p == leak_large || table.find(reinterpret_cast<uintptr_t>(p))));
    BOOST_TEST(h->size_in_request() == Heap::usable_size(leak_with_carried) + Heap::usable_size(leak_alone) +
                                           Heap::usable_size(leak_large));
    for (void* p : {leak_with_carried, leak_alone, leak_large}) h->free_owned(p);
    for (void* p : carried)
        if (p) h->free_owned(p);
    BOOST_TEST(table.size() == 0u);
    h->request = nullptr;
    h->blocks = nullptr;
}

// In runs of several pages (320 B slots: 5 pages, 1792 B: 7), the walk reads
// the carried bits of every page of the run: every other slot carried, the
// request's one leak in the run's last slot is found, no carried one is.
BOOST_DATA_TEST_CASE(own_runs_walk_reads_the_bits_of_every_page_of_a_run,
                     boost::unit_test::data::make({size_t{300}, size_t{1700}}), size) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    char token = 0;
    h->request = &token;  // (core asks only whether there is one)
    const unsigned bin = size_to_bin(size);
    const unsigned slots = k_bin_count[bin];
    BOOST_TEST_REQUIRE(k_bin_pages[bin] > 1u);
    // Request 1: one whole run; every other slot is left, carried.
    std::vector<char*> run;
    for (unsigned i = 0; i < slots; ++i) run.push_back(static_cast<char*>(h->alloc(size)));
    std::sort(run.begin(), run.end());
    BOOST_TEST_REQUIRE(static_cast<size_t>(run.back() - run.front()) == size_t{slots - 1} * k_bin_size[bin]);
    for (unsigned i = 0; i < slots; ++i) {
        if (i % 2) {
            h->free_owned(run[i]);
            continue;
        }
        BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(run[i]), size, 0, k_block_carried}));
        h->mark_carried(run[i]);
    }
    h->reset_for_request(SIZE_MAX);
    // Request 2 takes the free slots back and keeps only the run's last.
    std::vector<char*> mine;
    for (unsigned i = 1; i < slots; i += 2) mine.push_back(static_cast<char*>(h->alloc(size)));
    std::sort(mine.begin(), mine.end());
    BOOST_TEST_REQUIRE((mine.front() == run[1] && mine.back() == run[slots - 1]));
    for (char* p : mine)
        if (p != run[slots - 1]) h->free_owned(p);
    std::set<void*> seen;
    h->for_each_live_block(
        [](void* ctx, void* block, size_t) { static_cast<std::set<void*>*>(ctx)->insert(block); }, &seen, true);
    BOOST_TEST(seen.size() == 1u);
    BOOST_TEST(seen.count(run[slots - 1]) == 1u);
    h->free_owned(run[slots - 1]);
    for (unsigned i = 0; i < slots; i += 2) h->free_owned(run[i]);
    BOOST_TEST(table.size() == 0u);
    h->request = nullptr;
    h->blocks = nullptr;
}

// A carried block (an earlier request's) grown in place while the request
// is at its limit: growing first collects, which drains a remote free of the
// request's own block. That free counts; only the carried block's growth
// moves the request's baseline.
BOOST_AUTO_TEST_CASE(carried_block_grown_at_the_limit_keeps_drained_frees) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    char token = 0;
    h->request = &token;
    void* carried = h->alloc(3u << 20);
    BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(carried), Heap::usable_size(carried), 0, k_block_carried}));
    h->reset_for_request(SIZE_MAX);
    void* own = h->alloc(1000);  // the request's own (1024-byte bin)
    void* cached = h->alloc(4u << 20);
    h->free_owned(cached);  // to the huge cache, which collect() gives back
    std::thread([&] {
        char other = 0;
        Heap::free_any(own, &other);  // onto the remote stack: counted when drained
    }).join();
    BOOST_TEST_REQUIRE(h->has_remote());
    h->limit = h->real_in_request() + 2048;  // a page more is over the limit until collect()
    const size_t before = h->usage();
    void* q = h->realloc(carried, (3u << 20) + 4096);
    BOOST_TEST_REQUIRE(q != nullptr);
    BOOST_TEST(!h->has_remote());
    BOOST_TEST(h->usage() == before - 1024 + 4096);
    BOOST_TEST(h->size_in_request() == 0u);
    BOOST_TEST(h->peak >= h->usage());
    h->limit = SIZE_MAX;
    h->free_owned(q);
    BOOST_TEST(h->usage() == 0u);
    h->request = nullptr;
    h->blocks = nullptr;
}

// What a request holds, for its limit: what it maps, the chunks it takes
// from the heap's cache, the runs earlier requests emptied. Not what holds
// earlier requests' live blocks. (The heap's mapped memory less its caches
// was the base: a request reusing a clean one's runs, or taking cached
// chunks, ran past its limit by more each time.)
BOOST_AUTO_TEST_CASE(a_request_holds_what_it_reuses_from_earlier_requests) {
    const size_t mib = size_t{1} << 20, limit = 4 * mib;
    Test_heap h;
    char token = 0;
    h->request = &token;
    std::vector<void*> blocks;
    auto fill = [&](size_t size) {  // until the limit refuses (core's default: fail)
        size_t n = 0;
        while (void* p = h->alloc(size)) {
            blocks.push_back(p);
            ++n;
        }
        return n;
    };
    auto drop = [&] {
        for (void* p : blocks) h->free_owned(p);
        blocks.clear();
    };
    h->reset_for_request(limit);
    const size_t first = fill(1024);
    BOOST_TEST(first <= limit / 1024);
    BOOST_TEST(h->real_in_request() <= limit);
    drop();
    for (int round = 0; round < 3; ++round) {  // the runs the first emptied: each request's, not a gift
        h->reset_for_request(limit);
        BOOST_TEST(fill(1024) == first, "round " << round);
        BOOST_TEST(h->real_in_request() <= limit);
        drop();
    }
    // Chunks in the heap's cache count once taken.
    h->limit = SIZE_MAX;
    h->reset_for_request(SIZE_MAX);
    for (int i = 0; i < 48; ++i) blocks.push_back(h->alloc(512 * 1024));  // 12 chunks
    drop();
    h->collect_runs_if_grown();
    BOOST_TEST(h->cached_count > 2u);
    h->reset_for_request(limit);
    BOOST_TEST(h->real_in_request() == h->held_real());  // (nothing live: all it holds is the request's)
    BOOST_TEST(h->held_real() + h->cached_count * k_chunk_size <= h->real_size);
    const size_t runs = fill(512 * 1024);
    BOOST_TEST(runs * 512 * 1024 <= limit);
    BOOST_TEST(h->real_in_request() <= limit);
    drop();
    // Earlier requests' live blocks (carried, in the heap's table) are not
    // the next one's: the chunks and huge mappings that hold them. The
    // chunks they left empty are.
    Block_table table;
    h->blocks = &table;
    h->reset_for_request(SIZE_MAX);
    void* kept = h->alloc(3 * mib);
    void* small = h->alloc(100);
    for (void* p : {kept, small})
        BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(p), Heap::usable_size(p), 0, k_block_carried}));
    h->reset_for_request(limit);
    const size_t held_by_them = Huge_header::of(kept)->map_size + k_chunk_size;
    BOOST_TEST(h->held_real() >= held_by_them);
    BOOST_TEST(h->real_in_request() == h->held_real() - held_by_them);
    h->limit = SIZE_MAX;
    h->free_owned(kept);
    h->free_owned(small);
    BOOST_TEST(table.size() == 0u);
    h->blocks = nullptr;
    h->request = nullptr;
}

BOOST_AUTO_TEST_SUITE_END()
