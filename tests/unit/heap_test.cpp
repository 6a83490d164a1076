// Bins, huge blocks, aligned blocks, usage counters and memory return.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <vector>
#include <sys/mman.h>

#include "block_table.hpp"
#include "os.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Rng;
using zmm::test::Test_heap;

BOOST_AUTO_TEST_SUITE(heap)

BOOST_AUTO_TEST_CASE(bins_filled_and_emptied) {
    Test_heap h;
    for (unsigned b = 0; b < k_bins; ++b) {
        size_t size = k_bin_size[b];
        if (size_to_bin(size) != b) continue;  // bins zmm never selects
        BOOST_TEST_CONTEXT("bin " << b) {
            // three runs' worth: the first slots come in address order
            const size_t n = size_t{k_bin_count[b]} * 3;
            std::vector<char*> blocks;
            for (size_t i = 0; i < n; ++i) {
                char* p = static_cast<char*>(h->alloc(size));
                BOOST_TEST_REQUIRE(p != nullptr);
                BOOST_TEST_REQUIRE(reinterpret_cast<uintptr_t>(p) % 16 == 0u);
                BOOST_TEST_REQUIRE(Heap::usable_size(p) == size);
                memset(p, 0xab, size);
                blocks.push_back(p);
            }
            BOOST_TEST(static_cast<void*>(blocks[1]) == static_cast<void*>(blocks[0] + size));
            std::set<char*> distinct(blocks.begin(), blocks.end());
            BOOST_TEST(distinct.size() == n);
            std::sort(blocks.begin(), blocks.end());
            for (size_t i = 1; i < n; ++i)
                BOOST_TEST_REQUIRE(static_cast<void*>(blocks[i]) >= static_cast<void*>(blocks[i - 1] + size));
            BOOST_TEST(h->usage() == n * size);
            BOOST_TEST(h->check() == nullptr);
            for (char* p : blocks) h->free_owned(p);
            BOOST_TEST(h->usage() == 0u);
            BOOST_TEST(h->check() == nullptr);
            // LIFO: the last freed comes back first
            char* again = static_cast<char*>(h->alloc(size));
            BOOST_TEST(static_cast<void*>(again) == static_cast<void*>(blocks.back()));
            h->free_owned(again);
        }
    }
    // Freed small runs stay until collected (ZendMM), then their pages go.
    size_t before = h->usage();
    BOOST_TEST(before == 0u);
    BOOST_TEST(h->collect() > 0u);
    BOOST_TEST(h->chunks_count == 0u);
    BOOST_TEST(h->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(fast_free_matches_general_free) {
    Test_heap h;
    void* p = h->alloc(100);
    BOOST_TEST(h->free_small_fast(p));
    BOOST_TEST(!h->free_small_fast(p));  // now free: the fast path declines
    void* large = h->alloc(10000);
    BOOST_TEST(!h->free_small_fast(large));  // not small
    BOOST_TEST(!h->free_small_fast(static_cast<char*>(h->alloc(64)) + 16));  // interior
    alignas(16) char on_stack[64] = {};
    BOOST_TEST(!h->free_small_fast(on_stack));
    BOOST_TEST(!h->free_small_fast(nullptr));
    h->free_owned(large);
}

// realloc's fast path: in place within the bin, moved between bins from
// the free lists, and nothing (p untouched) wherever the slow path must
// look or diagnose.
BOOST_AUTO_TEST_CASE(fast_realloc_matches_general_realloc) {
    Test_heap h;
    char* p = static_cast<char*>(h->alloc(100));
    const unsigned from = size_to_bin(100), to = size_to_bin(200);
    memset(p, 0x5a, 100);
    BOOST_TEST(static_cast<void*>(h->try_realloc_small(p, 101)) == static_cast<void*>(p));  // same bin
    BOOST_TEST(h->usage() == k_bin_size[from]);
    // A bin never used has an empty list: the slow path's, p untouched.
    BOOST_TEST(h->try_realloc_small(p, 200) == nullptr);
    BOOST_TEST(!h->holds_link(p));
    BOOST_TEST(h->usage() == k_bin_size[from]);
    h->free_owned(h->alloc(200));  // now the bin's list holds a slot
    char* q = static_cast<char*>(h->try_realloc_small(p, 200));
    BOOST_TEST_REQUIRE(q != nullptr);
    BOOST_TEST(static_cast<void*>(q) != static_cast<void*>(p));
    BOOST_TEST(Heap::usable_size(q) == k_bin_size[to]);
    BOOST_TEST(std::count(q, q + 100, 0x5a) == 100);
    BOOST_TEST(h->holds_link(p));  // freed
    BOOST_TEST(h->usage() == k_bin_size[to]);
    BOOST_TEST(h->check() == nullptr);
    BOOST_TEST(h->try_realloc_small(p, 50) == nullptr);  // freed already: the slow path diagnoses
    BOOST_TEST(h->try_realloc_small(q + 16, 50) == nullptr);  // interior
    BOOST_TEST(h->try_realloc_small(q, 0) == nullptr);  // realloc(p, 0) frees
    BOOST_TEST(h->try_realloc_small(q, k_max_small + 1) == nullptr);  // to a page run
    BOOST_TEST(h->try_realloc_small(nullptr, 16) == nullptr);
    alignas(16) char on_stack[64] = {};
    BOOST_TEST(h->try_realloc_small(on_stack, 16) == nullptr);
    void* large = h->alloc(10000);
    BOOST_TEST(h->try_realloc_small(large, 100) == nullptr);  // not a slot
    // Down a bin, from the list again (p's slot, freed above).
    char* r = static_cast<char*>(h->try_realloc_small(q, 100));
    BOOST_TEST(static_cast<void*>(r) == static_cast<void*>(p));
    BOOST_TEST(std::count(r, r + 100, 0x5a) == 100);
    BOOST_TEST(h->usage() == k_bin_size[from] + Heap::usable_size(large));
    h->free_owned(r);
    h->free_owned(large);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// A sized delete's claim (the heap's copy of k_size_claims) is size_to_bin's
// answer, for every size and bin; a size beyond the bins fits none.
BOOST_AUTO_TEST_CASE(size_claims_match_the_lookup) {
    Test_heap h;
    unsigned mismatches = 0;
    for (unsigned b = 0; b < k_bins; ++b) {
        for (size_t s = 0; s <= k_max_small + 1; ++s)
            mismatches += h->size_claim_fits(s, b) != (s <= k_max_small && size_to_bin(s) == b);
        for (size_t s : {size_t{1} << 20, SIZE_MAX / 2, SIZE_MAX - 1}) mismatches += h->size_claim_fits(s, b);
        // (SIZE_MAX is the range of a bin no size maps to, which holds no block.)
        bool served = k_bin_size[b] % 16 == 0;
        mismatches += served && h->size_claim_fits(SIZE_MAX, b);
    }
    BOOST_TEST(mismatches == 0u);
    for (size_t s : {size_t{1}, size_t{16}, size_t{100}, size_t{3000}}) {
        void* p = h->alloc(s);
        BOOST_TEST(!h->free_small_fast(p, s + 2048));
        BOOST_TEST(h->free_small_fast(p, s));
    }
}

// own_chunk names owned chunks only (check() says so), whatever the heap
// does to its chunks; a heap of more chunks than its slots, whose chunks
// then share slots, frees each block all the same (free_small_fast asks the
// registry on a miss and remembers the chunk).
BOOST_AUTO_TEST_CASE(owned_chunk_cache_names_owned_chunks_only) {
    Test_heap h;
    BOOST_TEST(!h->free_small_fast(nullptr));
    std::vector<void*> large, small;
    const size_t chunks = Heap::k_own_slots + 16;
    // One large block per chunk (1.9 MiB: no two fit in one), a small block beside each.
    for (size_t i = 0; i < chunks; ++i) {
        large.push_back(h->alloc(1900 * 1024));
        BOOST_TEST_REQUIRE(large.back() != nullptr);
        small.push_back(h->alloc(48));
    }
    BOOST_TEST(h->chunks_count >= chunks);
    BOOST_TEST(h->check() == nullptr);
    for (void* p : small) BOOST_TEST(h->free_small_fast(p));
    BOOST_TEST(h->check() == nullptr);
    // Chunks emptied go to the cache or the OS: their entries are cleared.
    for (void* p : large) h->free_owned(p);
    BOOST_TEST(h->check() == nullptr);
    BOOST_TEST(h->collect() > 0u);
    BOOST_TEST(h->chunks_count == 0u);
    BOOST_TEST(h->check() == nullptr);
    for (uintptr_t o : h->own_chunk) BOOST_TEST(o == k_no_chunk);
    // A block of a chunk merged away is not the old heap's any more.
    Test_heap request;
    void* p = request->alloc(64);
    void* q = request->alloc(64);
    request->merge_into(h.heap);
    BOOST_TEST(request->check() == nullptr);
    BOOST_TEST(h->check() == nullptr);
    BOOST_TEST(request->try_free_small(p) == Heap::k_fast_free_uncached);
    BOOST_TEST(h->free_small_fast(p));
    BOOST_TEST(h->free_small_fast(q));
}

// A stale pointer into a chunk the heap has cached (empty, its owner still
// the heap) is not remembered: the chunk may go to another heap next (a
// request heap takes cached chunks from its thread's heap), whose blocks the
// first heap's fast path would then take (a reviewer's reproducer).
BOOST_AUTO_TEST_CASE(a_stale_free_does_not_remember_a_cached_chunk) {
    Test_heap persistent, request;
    request->chunk_source = &persistent.heap;
    void* big = persistent->alloc(1900 * 1024);
    persistent->free_owned(big);
    BOOST_TEST_REQUIRE(persistent->cached_count == 1u);
    BOOST_TEST(!persistent->free_small_fast(big));  // (misuse: the slow path diagnoses it)
    BOOST_TEST(persistent->check() == nullptr);
    void* q = request->alloc(64);  // in the chunk taken from persistent's cache
    BOOST_TEST_REQUIRE(Chunk::of(q) == Chunk::of(big));
    BOOST_TEST(!persistent->free_small_fast(q));
    BOOST_TEST(request->free_small_fast(q));
    BOOST_TEST(persistent->check() == nullptr);
    BOOST_TEST(request->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(collect_keeps_partly_used_runs) {
    Test_heap h;
    std::vector<void*> blocks;
    for (int i = 0; i < 1000; ++i) blocks.push_back(h->alloc(48));
    void* keep = blocks[500];
    for (void* p : blocks)
        if (p != keep) h->free_owned(p);
    h->collect();
    BOOST_TEST(h->check() == nullptr);
    BOOST_TEST(Heap::usable_size(keep) == 48u);
    BOOST_TEST(h->chunks_count == 1u);
    // the free list still works after collect
    std::vector<void*> again;
    for (int i = 0; i < 1000; ++i) again.push_back(h->alloc(48));
    BOOST_TEST(h->check() == nullptr);
    for (void* p : again) h->free_owned(p);
    h->free_owned(keep);
}

BOOST_AUTO_TEST_CASE(huge_blocks) {
    Test_heap h;
    const size_t sizes[] = {k_max_large + 1, 3 * 1024 * 1024 + 5, 16 * 1024 * 1024};
    for (size_t size : sizes) {
        BOOST_TEST_CONTEXT("size " << size) {
            char* p = static_cast<char*>(h->alloc(size));
            BOOST_TEST_REQUIRE(p != nullptr);
            BOOST_TEST((reinterpret_cast<uintptr_t>(p) & (k_chunk_size - 1)) == 0u);
            BOOST_TEST(granule_of(p) == granule_huge);
            size_t usable = (size + k_page_size - 1) & ~(k_page_size - 1);
            BOOST_TEST(Heap::usable_size(p) == usable);
            BOOST_TEST(Heap::owner_of(p) == &h.heap);
            p[0] = 1;
            p[usable - 1] = 2;
            BOOST_TEST(h->usage() == usable);
            h->free_owned(p);
            BOOST_TEST(h->usage() == 0u);
            // Its mapping cached, or unmapped (the biggest, over the budget): either
            // way a second free is a double free.
            BOOST_TEST((granule_of(p) == granule_huge_freed || granule_of(p) == granule_huge_unmapped));
            BOOST_TEST(Heap::claims(p));
            BOOST_TEST(Heap::owner_of(p) == nullptr);
        }
    }
    // freed huge mappings are kept for reuse, within the purge budget
    BOOST_TEST(h->real_size == h->huge_cache_pages * k_page_size);
    h->purge();
    BOOST_TEST(h->real_size == 0u);
    BOOST_TEST(h->huge_cache == nullptr);
}

// The leak scan reads as roots what is not the heaps' memory. A huge
// block's last granule is the block's only up to its mapping's end: past
// it, another mapping may sit in the same 2 MiB (libc's data and bss, in a
// process whose first block was one of 2.06 MiB), and is not the heap's.
BOOST_AUTO_TEST_CASE(heap_memory_ends_where_a_huge_mapping_ends) {
    Test_heap h;
    char* small = static_cast<char*>(h->alloc(100));
    const uintptr_t s = reinterpret_cast<uintptr_t>(small);
    BOOST_TEST(Heap::heap_memory_end(small) == (s | (k_chunk_size - 1)) + 1);  // a chunk: all of it
    const size_t size = k_chunk_size + 64 * 1024;
    char* big = static_cast<char*>(h->alloc(size));
    BOOST_TEST_REQUIRE(big != nullptr);
    const uintptr_t b = reinterpret_cast<uintptr_t>(big);
    const uintptr_t map_end =
        reinterpret_cast<uintptr_t>(Huge_header::of(big)->map_base) + Huge_header::of(big)->map_size;
    BOOST_TEST(map_end == b + size);
    BOOST_TEST(granule_of(big + size) == granule_huge_tail);  // the registry marks the granule whole
    BOOST_TEST(Heap::heap_memory_end(big) == map_end);
    BOOST_TEST(Heap::heap_memory_end(big + k_chunk_size) == map_end);  // in the last granule, in the mapping
    BOOST_TEST(Heap::heap_memory_end(big + size) == b + size);         // past it: not the heap's
    BOOST_TEST(Heap::heap_memory_end(big + 2 * k_chunk_size - 8) == b + 2 * k_chunk_size - 8);
    int local = 0;
    BOOST_TEST(Heap::heap_memory_end(&local) == reinterpret_cast<uintptr_t>(&local));
    // What a free or realloc of no live block's start diagnoses, and what it
    // leaves to glibc (which may have mapped a block past the huge one).
    BOOST_TEST(Heap::claims(small + 8));
    BOOST_TEST(Heap::claims(big + 64));
    BOOST_TEST(Heap::claims(big + size - 8));
    BOOST_TEST(!Heap::claims(big + size));
    BOOST_TEST(!Heap::claims(big + size + 16));
    BOOST_TEST(!Heap::claims(&local));
    h->free_owned(big);  // cached: no block there
    BOOST_TEST(Heap::heap_memory_end(big) == b);
    BOOST_TEST(Heap::claims(big));       // a double free
    BOOST_TEST(Heap::claims(big + 16));  // in its cached mapping
    h->purge();                          // the mapping gone: the kernel may map anything there
    BOOST_TEST(granule_of(big) == granule_huge_unmapped);
    BOOST_TEST(Heap::claims(big));  // still a double free
    BOOST_TEST(!Heap::claims(big + 16));
    h->free_owned(small);
}

// A free of glibc's pointer past a huge block's mapping reads the block's
// header (claims) while its owner may free the block and unmap the header:
// here the registry still marks a huge block whose header page is gone, or
// unreadable. No fault: the pointer is not zmm's.
BOOST_AUTO_TEST_CASE(claims_reads_a_huge_header_gone_meanwhile_without_fault) {
    const size_t span = 3 * k_chunk_size;
    char* base =
        static_cast<char*>(mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    BOOST_TEST_REQUIRE(static_cast<void*>(base) != MAP_FAILED);
    char* block =
        reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(base) + k_chunk_size) & ~(k_chunk_size - 1));
    char* header = block - k_page_size;
    char copy[16];
    BOOST_TEST(os::copy_mapped(copy, header, sizeof copy));
    registry_mark(block, k_chunk_size + 4096, granule_huge);
    BOOST_TEST(!Heap::claims(block + k_chunk_size + 64));  // mapped, but no header there: not a block
    BOOST_TEST(munmap(header, k_page_size) == 0);          // freed and unmapped by its owner
    BOOST_TEST(!os::copy_mapped(copy, header, sizeof copy));
    BOOST_TEST(!os::copy_mapped(copy, header + k_page_size - 8, sizeof copy));  // the half that is gone
    BOOST_TEST(!Heap::claims(block + k_chunk_size + 64));
    BOOST_TEST(!Heap::claims(block + 64));
    BOOST_TEST(mmap(header, k_page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
               static_cast<void*>(header));
    BOOST_TEST(!os::copy_mapped(copy, header, sizeof copy));  // mapped, unreadable
    BOOST_TEST(!Heap::claims(block + k_chunk_size + 64));
    registry_clear(block, k_chunk_size + 4096);
    munmap(base, span);
}

BOOST_AUTO_TEST_CASE(huge_mappings_are_reused) {
    Test_heap h;
    char* a = static_cast<char*>(h->alloc(3 * 1024 * 1024));
    a[0] = 1;
    h->free_owned(a);
    BOOST_TEST(granule_of(a) == granule_huge_freed);  // a second free is still a double free
    char* b = static_cast<char*>(h->alloc(3 * 1024 * 1024 - 100));
    BOOST_TEST(static_cast<void*>(b) == static_cast<void*>(a));
    BOOST_TEST(granule_of(b) == granule_huge);
    char* c = static_cast<char*>(h->alloc(20 * 1024 * 1024));  // too big for the cached one
    BOOST_TEST(static_cast<void*>(c) != static_cast<void*>(a));
    h->free_owned(b);
    // a much smaller request does not take a much bigger mapping
    char* d = static_cast<char*>(h->alloc(2300 * 1024));
    BOOST_TEST(static_cast<void*>(d) == static_cast<void*>(a));
    BOOST_TEST(Heap::usable_size(d) == size_t{2300} * 1024);
    h->free_owned(c);
    h->free_owned(d);
    BOOST_TEST(h->usage() == 0u);
}

// A freed huge mapping in the cache becomes the heap's next chunk when no
// empty chunk is cached: its first 2 MiB, resident, every page counted
// dirty (calloc clears what it takes), the header page and the tail given
// back, and the registry names a chunk there. Of two cached mappings, the
// smaller is taken.
BOOST_AUTO_TEST_CASE(cached_huge_mapping_becomes_a_chunk) {
    Test_heap h;
    char* big = static_cast<char*>(h->alloc(5 * 1024 * 1024));
    char* p = static_cast<char*>(h->alloc(3 * 1024 * 1024));
    memset(p, 0xab, 3 * 1024 * 1024);
    h->free_owned(p);
    h->free_owned(big);
    BOOST_TEST_REQUIRE(h->huge_cache != nullptr);
    BOOST_TEST(h->chunks == nullptr);
    const size_t unmapped = h->unmapped_bytes;
    const size_t real = h->real_size;
    // A calloc'd large run, the heap's first chunk: its pages held 0xab.
    char* z = static_cast<char*>(h->alloc_zeroed(1024 * 1024));
    BOOST_TEST_REQUIRE(z != nullptr);
    BOOST_TEST(static_cast<void*>(Chunk::of(z)) == static_cast<void*>(p));
    BOOST_TEST(std::all_of(z, z + 1024 * 1024, [](char c) { return c == 0; }));
    BOOST_TEST(granule_of(p) == granule_chunk);
    BOOST_TEST(h->huge_cache != nullptr);  // the 5 MiB one, kept
    BOOST_TEST(static_cast<void*>(h->huge_cache->block()) == static_cast<void*>(big));
    BOOST_TEST(h->huge_cache->next == nullptr);
    BOOST_TEST(h->real_size == real - 1024 * 1024 - k_page_size);  // less the tail and the header page
    BOOST_TEST(h->unmapped_bytes - unmapped == 1024 * 1024 + k_page_size);
    BOOST_TEST(h->dirty_pages == k_chunk_pages - 1 - 256);
    BOOST_TEST(h->check() == nullptr);
    h->free_owned(z);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
    h->purge();
    BOOST_TEST(h->huge_cache == nullptr);
}

// Without swap, the pages of such a mapping the huge block never touched
// are clean: calloc does not clear (fault in) them, and they stay out of
// the resident set.
BOOST_AUTO_TEST_CASE(untouched_pages_of_a_huge_mapping_made_a_chunk_are_clean) {
    Test_heap h;
    char* p = static_cast<char*>(h->alloc(3 * 1024 * 1024));
    p[0] = 1;
    p[400 * k_page_size] = 1;  // one page of the future chunk written
    h->free_owned(p);
    char* z = static_cast<char*>(h->alloc_zeroed(1024 * 1024));  // pages 1-256
    BOOST_TEST_REQUIRE(static_cast<void*>(Chunk::of(z)) == static_cast<void*>(p));
    unsigned char vec[256];
    BOOST_TEST_REQUIRE(os::resident_pages(z, 1024 * 1024, vec));
    const size_t resident = static_cast<size_t>(std::count_if(vec, vec + 256, [](unsigned char v) { return v & 1; }));
    if (os::no_swap()) {
        BOOST_TEST(h->dirty_pages == 1u);  // page 400
        BOOST_TEST(resident == 0u);
    } else {
        BOOST_TEST(h->dirty_pages == k_chunk_pages - 1 - 256);
    }
    BOOST_TEST(std::all_of(z, z + 1024 * 1024, [](char c) { return c == 0; }));
    h->free_owned(z);
    BOOST_TEST(h->check() == nullptr);
}

// A huge block moved by realloc leaves the heap's block table, as a free
// does (a request's carried block must not stay listed at an address the
// kernel may hand out again).
BOOST_AUTO_TEST_CASE(huge_realloc_move_forgets_the_old_address) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    char* p = static_cast<char*>(h->alloc(3u << 20));
    BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(p), 3u << 20, 0, k_block_carried}));
    Huge_header* hh = Huge_header::of(p);
    char* end = hh->map_base + hh->map_size;
    // Something must sit right after the mapping so that it cannot grow in
    // place: the test puts a page there, or finds one there already (EEXIST,
    // a neighbour the kernel placed; it blocks growth just as well).
    void* wall = mmap(end, k_page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    const bool walled_by_test = wall == static_cast<void*>(end);
    BOOST_TEST_REQUIRE((walled_by_test || (wall == MAP_FAILED && errno == EEXIST)));
    char* q = static_cast<char*>(h->realloc(p, 9u << 20));
    BOOST_TEST_REQUIRE(q != nullptr);
    BOOST_TEST(static_cast<void*>(q) != static_cast<void*>(p));
    BOOST_TEST(table.find(reinterpret_cast<uintptr_t>(p)) == nullptr);
    h->free_owned(q);
    h->blocks = nullptr;
    if (walled_by_test) munmap(wall, k_page_size);
}

// A carried block (an untraced request's, in the heap's table) marks its
// page: the fast free still takes the page's other blocks (off its main
// line), its bit sending only the carried one through the table; with the
// page's last carried block gone, the page's mark goes, and with the chunk
// leaving the heap, its bits.
BOOST_AUTO_TEST_CASE(carried_blocks_mark_their_page) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    std::vector<char*> blocks;
    for (int i = 0; i < 32; ++i) blocks.push_back(static_cast<char*>(h->alloc(48)));
    char* other = static_cast<char*>(h->alloc(2000));
    char* a = blocks[0];
    char* c = blocks[1];
    BOOST_TEST_REQUIRE(Chunk::page_of(a) == Chunk::page_of(blocks[31]));
    BOOST_TEST(Chunk::of(a)->carried_bits == nullptr);  // taken at the first carried block
    for (char* p : {a, c}) {
        BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(p), 48, 0, k_block_carried}));
        h->mark_carried(p);
    }
    BOOST_TEST(Chunk::of(a)->carried_bits != nullptr);
    BOOST_TEST(h->check() == nullptr);
    BOOST_TEST(Heap::may_be_carried(a));
    BOOST_TEST(Heap::may_be_carried(c));
    BOOST_TEST(!Heap::may_be_carried(other));
    BOOST_TEST(h->free_small_fast(other));
    for (int i = 2; i < 32; ++i) BOOST_TEST(!Heap::may_be_carried(blocks[i]));  // exact: one bit per 8 bytes
    char* b = blocks[2];
    char* d = blocks[3];
    BOOST_TEST(Heap::usable_size(b) == 48u);
    // The page's other blocks still free on the fast path (its branch for
    // a page with carried blocks);
    // the carried one, a wrong bin, an interior pointer do not.
    BOOST_TEST(!h->free_small_fast(a));
    BOOST_TEST(!h->free_small_fast(d, 16));  // a size of another bin
    BOOST_TEST(!h->free_small_fast(d, 49));
    BOOST_TEST(!h->free_small_fast(d, 4096));  // beyond the bins
    BOOST_TEST(!h->free_small_fast(d, SIZE_MAX));
    BOOST_TEST(!h->free_small_fast(d + 16));
    BOOST_TEST(!h->free_small_fast(c + 8));  // inside a carried block: not a slot
    BOOST_TEST(h->free_small_fast(d, 33));  // the bin's smallest size
    BOOST_TEST(h->free_small_fast(b));
    BOOST_TEST(!h->free_small_fast(b));  // already free: the slow path says so
    BOOST_TEST(table.size() == 2u);
    // The carried ones through the general path: the table forgets them.
    h->free_owned(a);
    BOOST_TEST(table.size() == 1u);
    BOOST_TEST(!Heap::may_be_carried(a));
    BOOST_TEST((Chunk::of(c)->map[Chunk::page_of(c)] & k_small_slow_free) != 0);  // c is still there
    BOOST_TEST(Heap::may_be_carried(c));
    h->free_owned(c);
    BOOST_TEST(table.size() == 0u);
    BOOST_TEST((Chunk::of(c)->map[Chunk::page_of(c)] & k_small_slow_free) == 0);  // fast again
    BOOST_TEST(!Heap::may_be_carried(blocks[31]));
    for (int i = 4; i < 32; ++i) BOOST_TEST(h->free_small_fast(blocks[i]));
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
    h->blocks = nullptr;
}

// A traced request's free (free_traced): the table forgets the block and
// the block is freed, whatever its kind, on the fast free's main line or
// off it (a page with a carried block); a block the table never had (the
// request's runtime blocks are all there; a merged heap's are not) frees
// the same.
BOOST_AUTO_TEST_CASE(free_traced_forgets_and_frees_every_kind) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    auto listed = [&](size_t n, uint32_t flags = 0) {
        char* p = static_cast<char*>(h->alloc(n));
        BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(p), n, 7, flags}));
        return p;
    };
    char* small = listed(48);
    char* carried = listed(48, k_block_carried);
    h->mark_carried(carried);
    char* neighbour = listed(48);  // in the carried block's page: off the main line
    BOOST_TEST_REQUIRE(Chunk::page_of(carried) == Chunk::page_of(neighbour));
    char* large = listed(20000);
    char* huge = listed(3u << 20);
    char* unlisted = static_cast<char*>(h->alloc(100));
    BOOST_TEST(table.size() == 5u);
    for (char* p : {small, neighbour, carried, large, huge, unlisted}) {
        h->free_traced(p);
        BOOST_TEST(table.find(reinterpret_cast<uintptr_t>(p)) == nullptr);
    }
    BOOST_TEST(table.size() == 0u);
    BOOST_TEST(!Heap::may_be_carried(carried));
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
    h->blocks = nullptr;
}

// The carried bits' pool: zeroed bits, given back and taken again (more
// than one mapping's worth), each its own.
BOOST_AUTO_TEST_CASE(carried_bits_come_zeroed_from_the_pool) {
    std::vector<uint64_t*> taken;
    for (int i = 0; i < 70; ++i) {
        uint64_t* b = carried_bits_pool::take();
        BOOST_TEST_REQUIRE(b != nullptr);
        for (size_t w = 0; w < k_carried_bits_bytes / 8; w += 97) BOOST_TEST_REQUIRE(b[w] == 0u);
        memset(b, 0xff, k_carried_bits_bytes);
        taken.push_back(b);
    }
    std::sort(taken.begin(), taken.end());
    for (size_t i = 1; i < taken.size(); ++i) BOOST_TEST(taken[i] >= taken[i - 1] + k_carried_bits_bytes / 8);
    for (uint64_t* b : taken) carried_bits_pool::give(b);
    for (int i = 0; i < 70; ++i) {
        uint64_t* b = carried_bits_pool::take();
        BOOST_TEST_REQUIRE(std::binary_search(taken.begin(), taken.end(), b));  // reused
        for (size_t w = 0; w < k_carried_bits_bytes / 8; ++w) BOOST_TEST_REQUIRE(b[w] == 0u);
    }
    for (uint64_t* b : taken) carried_bits_pool::give(b);
}

// A chunk that got no carried bits (the pool out of memory): every block of
// a marked page counts as carried (its free asks the table on the general
// path).
BOOST_AUTO_TEST_CASE(carried_without_bits_is_every_block) {
    Test_heap h;
    Block_table table;
    h->blocks = &table;
    char* a = static_cast<char*>(h->alloc(64));
    char* b = static_cast<char*>(h->alloc(64));
    BOOST_TEST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(a), 64, 0, k_block_carried}));
    h->mark_carried(a);
    Chunk* ch = Chunk::of(a);
    BOOST_TEST_REQUIRE(ch->carried_bits != nullptr);
    // As if the pool had had none (put back below: the chunk gives them
    // back as it leaves the heap).
    auto* bits = ch->carried_bits;
    ch->carried_bits = nullptr;
    BOOST_TEST(Heap::may_be_carried(b));
    BOOST_TEST(!h->free_small_fast(b));
    h->free_owned(b);  // not in the table: freed as any block
    h->free_owned(a);
    BOOST_TEST(table.size() == 0u);
    BOOST_TEST((ch->map[Chunk::page_of(a)] & k_small_slow_free) != 0);  // nothing to count with: marked for good
    ch->carried_bits = bits;
    h->blocks = nullptr;
}

// A cached mapping serves a smaller block whole: its slack stays mapped
// (no fault when a bigger block takes it again), growth uses it first, a
// shrink or a move gives it back.
BOOST_AUTO_TEST_CASE(huge_slack_of_a_cached_mapping) {
    Test_heap h;
    const size_t mib = 1024 * 1024;
    char* a = static_cast<char*>(h->alloc(4 * mib));
    memset(a, 3, 4 * mib);
    h->free_owned(a);
    const size_t whole = 4 * mib + k_page_size;
    BOOST_TEST(h->real_size == whole);

    char* b = static_cast<char*>(h->alloc(2 * mib + 512 * 1024));
    BOOST_TEST_REQUIRE(static_cast<void*>(b) == static_cast<void*>(a));
    BOOST_TEST(Heap::usable_size(b) == 2 * mib + 512 * 1024);
    BOOST_TEST(h->real_size == whole);  // nothing given back
    BOOST_TEST(b[3 * mib] == 3);        // the slack is the old pages, resident
    // Growth into the slack: in place, nothing mapped.
    char* c = static_cast<char*>(h->realloc(b, 3 * mib + 512 * 1024));
    BOOST_TEST_REQUIRE(static_cast<void*>(c) == static_cast<void*>(b));
    BOOST_TEST(h->real_size == whole);
    BOOST_TEST(h->usage() == 3 * mib + 512 * 1024);
    BOOST_TEST(Heap::usable_size(c) == 3 * mib + 512 * 1024);
    // Shrink: the tail and the slack go.
    char* d = static_cast<char*>(h->realloc(c, 2 * mib + 4096));
    BOOST_TEST_REQUIRE(static_cast<void*>(d) == static_cast<void*>(c));
    BOOST_TEST(h->real_size == 2 * mib + 4096 + k_page_size);
    BOOST_TEST(Huge_header::of(d)->map_size == 2 * mib + 4096 + k_page_size);
    h->free_owned(d);

    // A move (the pages after the mapping taken) gives back the old slack.
    char* e = static_cast<char*>(h->alloc(2 * mib + 4096));
    BOOST_TEST_REQUIRE(static_cast<void*>(e) == static_cast<void*>(d));
    h->free_owned(e);
    char* f = static_cast<char*>(h->alloc(8 * mib));
    memset(f, 5, 8 * mib);
    h->free_owned(f);
    char* g = static_cast<char*>(h->alloc(5 * mib));
    BOOST_TEST_REQUIRE(static_cast<void*>(g) == static_cast<void*>(f));
    Huge_header* gh = Huge_header::of(g);
    char* end = gh->map_base + gh->map_size;
    // Something must sit right after the mapping so that it cannot grow in
    // place: the test puts a page there, or finds one there already (EEXIST,
    // a neighbour the kernel placed; it blocks growth just as well).
    void* wall = mmap(end, k_page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    const bool walled_by_test = wall == static_cast<void*>(end);
    BOOST_TEST_REQUIRE((walled_by_test || (wall == MAP_FAILED && errno == EEXIST)));
    char* moved = static_cast<char*>(h->realloc(g, 9 * mib));
    BOOST_TEST_REQUIRE(moved != nullptr);
    BOOST_TEST(static_cast<void*>(moved) != static_cast<void*>(g));
    BOOST_TEST(moved[5 * mib - 1] == 5);
    unsigned char resident;
    BOOST_TEST(mincore(g + 6 * mib, k_page_size, &resident) == -1);  // the old slack is unmapped
    Huge_header* mh = Huge_header::of(moved);
    BOOST_TEST(h->real_size == mh->map_size + h->huge_cache_pages * k_page_size);
    h->free_owned(moved);
    if (walled_by_test) munmap(wall, k_page_size);
    BOOST_TEST(h->usage() == 0u);
}

// A cached mapping too small for a block grows to hold it (in place, or
// moved when something sits after it): the block is counted once, at its
// own size, never as a block of the mapping's old size too (peak, the
// huge allocations, the bytes allocated), and the old pages come along.
// Its limit sees the mapping's growth, not a second mapping.
BOOST_AUTO_TEST_CASE(a_cached_huge_mapping_grown_counts_its_block_once) {
    const size_t mib = 1024 * 1024;
    for (bool walled : {false, true}) {
        BOOST_TEST_CONTEXT("walled " << walled) {
            Test_heap h;
            // Room after the block's mapping for the growth in place: the
            // kernel maps top-down, so the block lands under a hole made
            // first, which then goes.
            const size_t hole_size = 16 * mib;
            void* hole = mmap(nullptr, hole_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            BOOST_TEST_REQUIRE(hole != MAP_FAILED);
            char* a = static_cast<char*>(h->alloc(4 * mib));
            munmap(hole, hole_size);
            memset(a, 7, 4 * mib);
            h->free_owned(a);
            const size_t peak_before = h->peak;
            const uint64_t allocs_before = h->huge_allocs;
            Huge_header* ch = Huge_header::of(a);
            char* end = ch->map_base + ch->map_size;
            void* wall = MAP_FAILED;
            if (walled) {
                wall = mmap(end, k_page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                BOOST_TEST_REQUIRE((wall == static_cast<void*>(end) || errno == EEXIST));
            } else {
                void* room = mmap(end, 3 * mib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                BOOST_TEST_REQUIRE(room == static_cast<void*>(end));  // (the hole's place)
                munmap(end, 3 * mib);  // free: the growth in place can take it
            }
            // Room for the new pages only (the old ones are mapped already).
            h->limit = 8 * mib;
            char* b = static_cast<char*>(h->alloc(7 * mib));
            BOOST_TEST_REQUIRE(b != nullptr);
            BOOST_TEST((static_cast<void*>(b) == static_cast<void*>(a)) == !walled);
            BOOST_TEST(b[4 * mib - 1] == 7);  // the cached pages, moved or not
            BOOST_TEST(h->huge_cache == nullptr);
            BOOST_TEST(h->usage() == 7 * mib);
            BOOST_TEST(h->peak == std::max(peak_before, 7 * mib));
            BOOST_TEST(h->huge_allocs == allocs_before + 1);
            Huge_header* bh = Huge_header::of(b);
            BOOST_TEST(bh->map_size == 7 * mib + k_page_size);
            BOOST_TEST(h->real_size == bh->map_size);
            BOOST_TEST(granule_of(b) == granule_huge);
            if (walled) {
                unsigned char resident;
                BOOST_TEST(mincore(a, k_page_size, &resident) == -1);  // the old place is unmapped
                BOOST_TEST(granule_of(a) == granule_huge_unmapped);
            }
            memset(b, 1, 7 * mib);
            h->free_owned(b);
            BOOST_TEST(h->usage() == 0u);
            if (wall == static_cast<void*>(end)) munmap(wall, k_page_size);
        }
    }
}

// A huge block whose mapping the program split (madvise on a part of it:
// one mapping becomes three) cannot grow by mremap, in place or moved (the
// kernel refuses a range of several mappings, and some kernels unmap the
// move's target before refusing): it grows by a copy, its bytes kept. The
// same for a cached mapping a bigger block would grow: left cached.
BOOST_AUTO_TEST_CASE(a_huge_block_whose_mapping_the_program_split_grows_by_a_copy) {
    const size_t mib = 1024 * 1024;
    Test_heap h;
    char* a = static_cast<char*>(h->alloc(4 * mib));
    for (size_t i = 0; i < 4 * mib; i += k_page_size) a[i] = static_cast<char>(i >> 12);
    BOOST_TEST_REQUIRE(madvise(a + mib, k_page_size, MADV_DONTDUMP) == 0);
    char* b = static_cast<char*>(h->realloc(a, 9 * mib));
    BOOST_TEST_REQUIRE(b != nullptr);
    for (size_t i = 0; i < 4 * mib; i += k_page_size) BOOST_TEST_REQUIRE(b[i] == static_cast<char>(i >> 12));
    BOOST_TEST(h->usage() == 9 * mib);
    // The old mapping, split, went to the cache; a bigger block leaves it there.
    BOOST_TEST_REQUIRE(h->huge_cache != nullptr);
    Huge_header* cached = h->huge_cache;
    char* c = static_cast<char*>(h->alloc(6 * mib));
    BOOST_TEST_REQUIRE(c != nullptr);
    BOOST_TEST(h->huge_cache == cached);
    BOOST_TEST(Huge_header::of(c)->map_size == 6 * mib + k_page_size);
    BOOST_TEST(h->usage() == 15 * mib);
    h->free_owned(b);
    h->free_owned(c);
    BOOST_TEST(h->usage() == 0u);
}

BOOST_AUTO_TEST_CASE(freed_pages_are_purged_after_a_pass_unused) {
    Test_heap h;
    std::vector<void*> keep, drop;
    // 256 KiB runs, every other one freed (their chunks stay in use)
    const size_t run = 256 * 1024, pages = run / k_page_size;
    for (int i = 0; i < 16; ++i) (i % 2 ? drop : keep).push_back(h->alloc(run));
    for (void* p : drop) memset(p, 1, run);
    for (size_t i = 0; i + 1 < drop.size(); ++i) h->free_owned(drop[i]);
    BOOST_TEST(h->dirty_pages == pages * (drop.size() - 1));
    BOOST_TEST(h->purged_bytes == 0u);  // below the budget: nothing given back
    // A pass gives back only pages that were dirty at the pass before.
    h->purge(true);
    BOOST_TEST(h->purged_bytes == 0u);
    void* again = h->alloc(run);  // reuses freed pages: they are in use again
    h->free_owned(drop.back());   // freed after the first pass: young
    h->purge(true);
    BOOST_TEST(h->purged_bytes == (drop.size() - 2) * run);
    BOOST_TEST(h->dirty_pages == pages);
    h->purge(true);
    BOOST_TEST(h->dirty_pages == 0u);
    BOOST_TEST(h->check() == nullptr);
    // A pass that keeps some pages resident stops there (the heap's own
    // passes keep its budget): 7 runs freed, aged by a pass, 3 runs kept.
    Test_heap part;
    std::vector<void*> runs;
    for (int i = 0; i < 16; ++i) runs.push_back(part->alloc(run));
    for (int i = 0; i < 14; i += 2) part->free_owned(runs[i]);
    BOOST_TEST(part->dirty_pages == 7 * pages);
    part->purge(true, 3 * pages);  // nothing aged yet: nothing given back
    BOOST_TEST(part->dirty_pages == 7 * pages);
    part->purge(true, 3 * pages);
    BOOST_TEST(part->dirty_pages == 3 * pages);
    BOOST_TEST(part->purged_bytes == 4 * run);
    BOOST_TEST(part->check() == nullptr);
    part->purge(true, 3 * pages);  // at the mark already
    BOOST_TEST(part->dirty_pages == 3 * pages);
    part->purge(true);
    BOOST_TEST(part->dirty_pages == 0u);
    for (int i = 1; i < 16; i += 2) part->free_owned(runs[i]);
    part->free_owned(runs[14]);
    // Far over the budget, down to the budget at once.
    Test_heap big;
    size_t budget_runs = g_tuning.dirty_budget_pages / pages;
    std::vector<void*> many;
    for (size_t i = 0; i < 2 * (8 * budget_runs + 8); ++i) many.push_back(big->alloc(run));
    for (size_t i = 0; i < many.size(); i += 2) big->free_owned(many[i]);
    BOOST_TEST(big->purged_bytes > 0u);
    BOOST_TEST(big->dirty_pages <= 8 * g_tuning.dirty_budget_pages);
    for (size_t i = 1; i < many.size(); i += 2) big->free_owned(many[i]);
    h->free_owned(again);
    for (void* p : keep) h->free_owned(p);
}

BOOST_AUTO_TEST_CASE(huge_realloc_keeps_content) {
    Test_heap h;
    size_t size = 3 * 1024 * 1024;
    char* p = static_cast<char*>(h->alloc(size));
    for (size_t i = 0; i < size; i += 4096) p[i] = static_cast<char>(i >> 12);
    // grow a lot: in place or moved by mremap, content kept
    char* q = static_cast<char*>(h->realloc(p, 64 * 1024 * 1024));
    BOOST_TEST_REQUIRE(q != nullptr);
    BOOST_TEST((reinterpret_cast<uintptr_t>(q) & (k_chunk_size - 1)) == 0u);
    for (size_t i = 0; i < size; i += 4096) BOOST_TEST_REQUIRE(q[i] == static_cast<char>(i >> 12));
    q[64 * 1024 * 1024 - 1] = 7;
    BOOST_TEST(h->usage() == size_t{64} * 1024 * 1024);
    // shrink in place
    char* r = static_cast<char*>(h->realloc(q, 5 * 1024 * 1024));
    BOOST_TEST(static_cast<void*>(r) == static_cast<void*>(q));
    BOOST_TEST(Heap::usable_size(r) == size_t{5} * 1024 * 1024);
    BOOST_TEST(granule_of(r + 6 * 1024 * 1024) != granule_huge_tail);
    // huge to small: moves
    char* s = static_cast<char*>(h->realloc(r, 100));
    BOOST_TEST(Heap::usable_size(s) == 112u);
    BOOST_TEST(s[0] == 0);
    h->free_owned(s);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->huge == nullptr);
}

BOOST_AUTO_TEST_CASE(realloc_across_kinds_keeps_content) {
    Test_heap h;
    Rng rng(7);
    const size_t steps[] = {10, 100, 3000, 3073, 50000, 2 * 1024 * 1024, 5 * 1024 * 1024, 700, 16, 1};
    char* p = static_cast<char*>(h->alloc(1));
    size_t have = 1;
    p[0] = 'x';
    std::vector<char> model(1, 'x');
    for (size_t want : steps) {
        p = static_cast<char*>(h->realloc(p, want));
        BOOST_TEST_REQUIRE(p != nullptr);
        size_t keep = std::min(have, want);
        BOOST_TEST_REQUIRE(memcmp(p, model.data(), keep) == 0);
        model.resize(want);
        for (size_t i = 0; i < want; ++i) model[i] = static_cast<char>(rng.next());
        memcpy(p, model.data(), want);
        have = want;
        BOOST_TEST_REQUIRE(h->check() == nullptr);
    }
    h->free_owned(p);
    BOOST_TEST(h->usage() == 0u);
}

// 3073..4608 B come from zmm's two bins past ZendMM's (a page; 4608 B slots
// packed 8 to 9 pages), where ZendMM took 1- and 2-page runs: a block of
// SQLite's page cache (4368 B) costs 4608 B, not 8192. A sized delete's
// size is judged by the block's kind, not its usable size: an aligned
// allocation of 4 KiB is a page run as big as bin 30's slot, and no plain
// allocation of 4000 B (a slot) is a run.
BOOST_AUTO_TEST_CASE(page_plus_header_sizes_are_small) {
    Test_heap h;
    struct Case {
        size_t bytes, usable;
    };
    for (Case c : {Case{3073, 4096}, Case{4096, 4096}, Case{4097, 4608}, Case{4368, 4608}, Case{4608, 4608},
                   Case{4609, 8192}}) {
        BOOST_TEST_CONTEXT("size " << c.bytes) {
            const size_t before = h->usage();
            void* p = h->alloc(c.bytes);
            BOOST_TEST_REQUIRE(p != nullptr);
            BOOST_TEST(Heap::usable_size(p) == c.usable);
            BOOST_TEST(Heap::in_small_run(p) == (c.bytes <= 4608));
            BOOST_TEST(h->usage() - before == c.usable);  // ZendMM's rounded size, of zmm's bins
            BOOST_TEST(Heap::size_matches(p, c.bytes));
            BOOST_TEST(!Heap::size_matches(p, 100));
            memset(p, 0x33, c.bytes);
            h->free_owned(p);
        }
    }
    void* aligned_page = h->alloc_aligned(4096, 4000);
    BOOST_TEST_REQUIRE(aligned_page != nullptr);
    BOOST_TEST(!Heap::in_small_run(aligned_page));  // a run of one page
    BOOST_TEST(Heap::usable_size(aligned_page) == 4096u);
    BOOST_TEST(!Heap::size_matches(aligned_page, 4000));
    h->free_owned(aligned_page);
    // A run shrunk by realloc stays a run in place down to ZendMM's largest
    // bin (no copy, as ZendMM), and moves to a slot below it.
    char* run = static_cast<char*>(h->alloc(32768));
    memset(run, 0x44, 32768);
    BOOST_TEST(h->realloc(run, 4200) == static_cast<void*>(run));
    BOOST_TEST(Heap::usable_size(run) == 8192u);
    BOOST_TEST(!Heap::in_small_run(run));
    BOOST_TEST(h->usage() == 8192u);
    char* slot = static_cast<char*>(h->realloc(run, 3000));
    BOOST_TEST(static_cast<void*>(slot) != static_cast<void*>(run));
    BOOST_TEST(Heap::usable_size(slot) == 3072u);
    BOOST_TEST((slot[0] == 0x44 && slot[2999] == 0x44));
    h->free_owned(slot);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// Runs and huge blocks another thread freed wait on the owner's remote
// stack; a large or huge allocation that would otherwise map memory takes
// them first (they waited until one of the heap's bins ran dry, with their
// pages counted in use and a new chunk or mapping made instead).
BOOST_AUTO_TEST_CASE(remote_frees_are_taken_before_mapping) {
    Test_heap h;
    char other_thread = 0;
    std::vector<void*> runs;
    while (h->chunks_count <= 1) runs.push_back(h->alloc(256 * 1024));
    h->free_owned(runs.back());  // the one that took a second chunk
    runs.pop_back();
    BOOST_TEST_REQUIRE(h->chunks_count == 1u);
    void* freed = runs[3];
    Heap::free_any(freed, &other_thread);  // onto the remote stack
    void* again = h->alloc(256 * 1024);
    BOOST_TEST(again == freed);
    BOOST_TEST(h->chunks_count == 1u);
    runs[3] = again;

    void* huge = h->alloc(3u << 20);
    const size_t real = h->real_size;
    Heap::free_any(huge, &other_thread);
    void* huge_again = h->alloc(3u << 20);
    BOOST_TEST(huge_again == huge);  // the cached mapping, not a new one
    BOOST_TEST(h->real_size == real);
    h->free_owned(huge_again);
    for (void* p : runs) h->free_owned(p);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// calloc of a page run clears only pages that may hold something: pages
// never written since the chunk was mapped, or purged since, read as zero
// and stay untouched (not resident); a run reused from a freed block is
// cleared; and pages the kernel refused to purge (locked memory) stay
// dirty, so they are cleared too.
BOOST_AUTO_TEST_CASE(calloc_clears_only_pages_that_may_be_written) {
    Test_heap h;
    const size_t size = 256 * 1024, pages = size / k_page_size;
    auto resident = [](void* p, size_t n) {
        std::vector<unsigned char> vec(n / k_page_size);
        BOOST_TEST_REQUIRE(mincore(p, n, vec.data()) == 0);
        size_t count = 0;
        for (unsigned char v : vec) count += v & 1;
        return count;
    };
    auto all_zero = [](const char* p, size_t n) {
        for (size_t i = 0; i < n; ++i)
            if (p[i]) return false;
        return true;
    };
    char* fresh = static_cast<char*>(h->alloc_zeroed(size));
    BOOST_TEST_REQUIRE(fresh != nullptr);
    BOOST_TEST(resident(fresh, size) == 0u);  // not cleared: never written
    BOOST_TEST(all_zero(fresh, size));
    memset(fresh, 0xab, size);
    h->free_owned(fresh);
    char* reused = static_cast<char*>(h->alloc_zeroed(size));
    BOOST_TEST_REQUIRE(static_cast<void*>(reused) == static_cast<void*>(fresh));  // the same pages, dirty: cleared
    BOOST_TEST(all_zero(reused, size));
    memset(reused, 0xcd, size);
    h->free_owned(reused);
    h->purge();
    char* purged = static_cast<char*>(h->alloc_zeroed(size));
    BOOST_TEST_REQUIRE(static_cast<void*>(purged) == static_cast<void*>(fresh));
    BOOST_TEST(resident(purged, size) == 0u);  // purged: zero, untouched
    BOOST_TEST(all_zero(purged, size));
    memset(purged, 0xef, size);
    if (mlock(purged, size) == 0) {
        h->free_owned(purged);
        h->purge();  // refused for the locked pages: they stay dirty
        char* locked = static_cast<char*>(h->alloc_zeroed(size));
        BOOST_TEST_REQUIRE(static_cast<void*>(locked) == static_cast<void*>(fresh));
        BOOST_TEST(all_zero(locked, size));
        munlock(locked, size);
        h->free_owned(locked);
    } else {
        BOOST_TEST_MESSAGE("mlock refused (" << strerror(errno) << "): the locked case is not run");
        h->free_owned(purged);
    }
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(pages == 64u);
}

BOOST_AUTO_TEST_CASE(aligned_blocks) {
    Test_heap h;
    std::vector<void*> blocks;
    for (size_t align = 32; align <= 16 * 1024 * 1024; align <<= 1) {
        for (size_t size : {size_t{0}, size_t{1}, size_t{100}, align / 2, align, align + 1, size_t{70000}}) {
            void* p = h->alloc_aligned(align, size);
            BOOST_TEST_REQUIRE(p != nullptr);
            BOOST_TEST_REQUIRE(reinterpret_cast<uintptr_t>(p) % align == 0u);
            BOOST_TEST_REQUIRE(Heap::usable_size(p) >= (size ? size : 1));  // size 0: a block of its own
            memset(p, 0x5a, size);
            blocks.push_back(p);
        }
    }
    BOOST_TEST(h->check() == nullptr);
    for (void* p : blocks) h->free_owned(p);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// A huge block grows in place (mremap) when the addresses after it are free.
// (Advice given to the block alone, not its header page, once split the
// mapping in two, and every growth moved.)
BOOST_AUTO_TEST_CASE(huge_blocks_grow_in_place) {
    Test_heap h;
    unsigned in_place = 0, tries = 0;
    for (int i = 0; i < 8; ++i) {
        void* p = h->alloc(3u << 20);
        char* end = static_cast<char*>(p) + (3u << 20);
        // Is the page after it free? (Probed, then given back.)
        void* probe = mmap(end, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        const bool room = probe == end;
        if (probe != MAP_FAILED) munmap(probe, 4096);
        void* q = h->realloc(p, (3u << 20) + 4096);
        BOOST_TEST_REQUIRE(q != nullptr);
        if (room) {
            ++tries;
            in_place += q == p;
        }
        h->free_owned(q);
    }
    BOOST_TEST_REQUIRE(tries > 0u);  // (the kernel maps top-down: there is room after most)
    BOOST_TEST(in_place == tries);
}

BOOST_AUTO_TEST_CASE(usage_and_peak_count_rounded_sizes) {
    Test_heap h;
    void* a = h->alloc(20);       // 32
    void* b = h->alloc(5000);     // 2 pages
    void* c = h->alloc(3 << 20);  // huge, 3 MiB
    BOOST_TEST(h->usage() == 32u + 8192u + (3u << 20));
    BOOST_TEST(h->peak == h->usage());
    BOOST_TEST(h->real_size == k_chunk_size + (3u << 20) + k_page_size);
    h->free_owned(c);
    BOOST_TEST(h->usage() == 32u + 8192u);
    BOOST_TEST(h->peak == 32u + 8192u + (3u << 20));
    h->free_owned(a);
    h->free_owned(b);
    BOOST_TEST(h->usage() == 0u);
}

// The fast path's accounting (the peak kept as a distance below it) against
// a model, at every step of a walk up, down and up past the old peak.
BOOST_AUTO_TEST_CASE(usage_and_peak_follow_a_model_up_and_down) {
    Test_heap h;
    std::vector<void*> live;
    size_t usage = 0, peak = 0;
    auto check = [&] {
        BOOST_TEST_REQUIRE(h->usage() == usage);
        BOOST_TEST_REQUIRE(h->peak == peak);
    };
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 20000; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        // Grows for a while, then shrinks, then grows past the old peak.
        const bool grow = ((i / 2000) % 2 == 0) ? x % 3 != 0 : x % 3 == 0;
        if (grow || live.empty()) {
            void* p = h->alloc(16 + x % 200);
            live.push_back(p);
            usage += h->usable_size(p);
            peak = usage > peak ? usage : peak;
        } else {
            const size_t k = (x >> 8) % live.size();
            usage -= h->usable_size(live[k]);
            h->free_owned(live[k]);
            live[k] = live.back();
            live.pop_back();
        }
        check();
    }
    // One block past the peak, freed at once: the peak keeps it.
    void* p = h->alloc(4000);
    usage += h->usable_size(p);
    peak = usage > peak ? usage : peak;
    h->free_owned(p);
    for (void* q : live) h->free_owned(q);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->peak == peak);
}

BOOST_AUTO_TEST_CASE(limit_fails_with_enomem) {
    Test_heap h;
    h->limit = 4 * k_chunk_size;
    errno = 0;
    void* big = h->alloc(16 * 1024 * 1024);
    BOOST_TEST(big == nullptr);
    BOOST_TEST(errno == ENOMEM);
    void* ok = h->alloc(1024 * 1024);
    BOOST_TEST(ok != nullptr);
    h->free_owned(ok);
}

BOOST_AUTO_TEST_CASE(absurd_sizes) {
    Test_heap h;
    for (size_t size : {SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX / 2 + 1, size_t{1} << 60}) {
        errno = 0;
        BOOST_TEST(h->alloc(size) == nullptr);
        BOOST_TEST(errno == ENOMEM);
        errno = 0;
        BOOST_TEST(h->alloc_aligned(4096, size) == nullptr);
        BOOST_TEST(errno == ENOMEM);
    }
}

BOOST_AUTO_TEST_CASE(empty_chunks_are_cached_then_released) {
    Test_heap h;
    std::vector<void*> runs;
    const size_t n = g_tuning.cached_chunks + 6;
    for (size_t i = 0; i < n; ++i) runs.push_back(h->alloc(k_max_large));  // one chunk each
    BOOST_TEST(h->chunks_count == n);
    for (void* p : runs) h->free_owned(p);
    BOOST_TEST(h->chunks_count == 0u);
    BOOST_TEST(h->cached_count == g_tuning.cached_chunks);
    BOOST_TEST(h->real_size == g_tuning.cached_chunks * k_chunk_size);
    h->collect();
    BOOST_TEST(h->cached_count == 0u);
    BOOST_TEST(h->real_size == 0u);
}

BOOST_AUTO_TEST_CASE(random_mixed_workload_keeps_content) {
    Test_heap h;
    Rng rng(99);
    struct Block {
        unsigned char* p;
        size_t size;
        unsigned char tag;
    };
    std::vector<Block> live;
    for (int step = 0; step < 20000; ++step) {
        unsigned op = static_cast<unsigned>(rng.below(10));
        if (op < 5 || live.empty()) {
            size_t size = rng.below(20) == 0 ? 3073 + rng.below(200000) : 1 + rng.below(3072);
            if (rng.below(500) == 0) size = 2200000 + rng.below(3000000);
            auto* p = static_cast<unsigned char*>(h->alloc(size));
            BOOST_TEST_REQUIRE(p != nullptr);
            unsigned char tag = static_cast<unsigned char>(rng.next());
            memset(p, tag, size);
            live.push_back({p, size, tag});
        } else if (op < 8) {
            size_t i = rng.below(live.size());
            Block b = live[i];
            for (size_t k = 0; k < b.size; k += 97) BOOST_TEST_REQUIRE(b.p[k] == b.tag);
            BOOST_TEST_REQUIRE(b.p[b.size - 1] == b.tag);
            h->free_owned(b.p);
            live[i] = live.back();
            live.pop_back();
        } else {
            size_t i = rng.below(live.size());
            Block& b = live[i];
            size_t size = 1 + rng.below(rng.below(4) == 0 ? 300000 : 4000);
            auto* p = static_cast<unsigned char*>(h->realloc(b.p, size));
            BOOST_TEST_REQUIRE(p != nullptr);
            size_t keep = std::min(size, b.size);
            for (size_t k = 0; k < keep; k += 61) BOOST_TEST_REQUIRE(p[k] == b.tag);
            memset(p, b.tag, size);
            b.p = p;
            b.size = size;
        }
        if (step % 1000 == 0) BOOST_TEST_REQUIRE(h->check() == nullptr);
    }
    for (auto& b : live) h->free_owned(b.p);
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
