// The reachability mark: which of a request's blocks the roots reach, which
// are lost outright, which only through other lost blocks.
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "block_table.hpp"
#include "reachability.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Test_heap;

namespace {

// The request's blocks, as the scan gets them.
struct Candidates {
    std::vector<Leak> leaks;
    void add(void* p, size_t size) { leaks.push_back(Leak{reinterpret_cast<uintptr_t>(p), size, 0, {}, false}); }
    Leak_kind kind_of(void* p) const {
        for (const Leak& l : leaks)
            if (l.address == reinterpret_cast<uintptr_t>(p)) return l.kind;
        BOOST_FAIL("not a candidate");
        return Leak_kind::live;
    }
};

void link(void* from, size_t word, const void* to) { static_cast<const void**>(from)[word] = to; }

}  // namespace

BOOST_AUTO_TEST_SUITE(reachability)

BOOST_AUTO_TEST_CASE(nothing_points_to_it_then_definitely_lost) {
    Test_heap req;
    void* a = req->alloc(48);
    memset(a, 0, 48);
    Candidates c;
    c.add(a, 48);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    uintptr_t roots[4] = {0, 1, 2, 3};
    r.scan_root(roots, roots + 4);
    r.classify();
    BOOST_TEST((c.kind_of(a) == Leak_kind::definite));
}

BOOST_AUTO_TEST_CASE(a_lost_list_is_one_definite_head_and_indirect_rest) {
    Test_heap req;
    Candidates c;
    std::vector<void*> nodes;
    for (int i = 0; i < 6; ++i) {
        void* n = req->alloc(32);
        memset(n, 0, 32);
        nodes.push_back(n);
    }
    for (int i = 0; i + 1 < 6; ++i) link(nodes[i], 1, nodes[i + 1]);
    // Listed in reverse: the order of candidates must not matter.
    for (int i = 5; i >= 0; --i) c.add(nodes[i], 32);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    r.classify();
    BOOST_TEST((c.kind_of(nodes[0]) == Leak_kind::definite));
    for (int i = 1; i < 6; ++i) BOOST_TEST((c.kind_of(nodes[i]) == Leak_kind::indirect));
}

BOOST_AUTO_TEST_CASE(a_root_reaches_the_block_and_what_it_points_to) {
    Test_heap req;
    void* a = req->alloc(100);
    void* b = req->alloc(5000);     // large
    void* d = req->alloc(3 << 20);  // huge
    memset(a, 0, 100);
    memset(b, 0, 5000);
    link(a, 3, b);
    link(b, 600, d);
    Candidates c;
    c.add(a, 100);
    c.add(b, 5000);
    c.add(d, 3 << 20);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    const void* global[2] = {nullptr, a};
    r.scan_root(global, global + 2);
    r.classify();
    BOOST_TEST((c.kind_of(a) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(b) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(d) == Leak_kind::reachable));
}

// The wide scan is taken where the CPU has AVX2, as libgcc's check (which
// zmm leaves out: its constructor's cpuid) tells it, and never when told
// not to.
BOOST_AUTO_TEST_CASE(the_wide_scan_is_the_cpu_s) {
    Test_heap req;
    Candidates c;
    c.add(req->alloc(16), 16);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
#if defined(__x86_64__)
    __builtin_cpu_init();
    BOOST_TEST(r.wide() == (__builtin_cpu_supports("avx2") != 0));
#else
    BOOST_TEST(!r.wide());
#endif
    Reachability::set_narrow_only(true);
    struct Restore {
        ~Restore() { Reachability::set_narrow_only(false); }
    } restore;
    Reachability n;
    BOOST_REQUIRE(n.prepare(c.leaks.data(), c.leaks.size()));
    BOOST_TEST(!n.wide());
}

// A long root is read 8 words at a time where the CPU allows (AVX2), else
// one at a time (both are tested): a pointer in any of a group's 8 places,
// or in the tail after the last whole group, is found; words near the
// candidates' range but out of it (on either side, or only the sign bit
// apart) reach nothing.
BOOST_DATA_TEST_CASE(pointers_anywhere_in_a_long_root_are_found, boost::unit_test::data::make({false, true}),
                     narrow_only) {
    Reachability::set_narrow_only(narrow_only);
    struct Restore {
        ~Restore() { Reachability::set_narrow_only(false); }
    } restore;
    Test_heap req;
    Candidates c;
    std::vector<void*> blocks;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < 21; ++i) {
        void* b = req->alloc(16);
        memset(b, 0, 16);
        blocks.push_back(b);
        c.add(b, 16);
        lo = std::min(lo, reinterpret_cast<uintptr_t>(b));
        hi = std::max(hi, reinterpret_cast<uintptr_t>(b));
    }
    const uintptr_t sign = uintptr_t{1} << 63;
    const uintptr_t misses[] = {0, 1, lo - 1, lo - 4096, lo ^ sign, hi ^ sign, ~uintptr_t{0}, sign};
    std::vector<uintptr_t> root(8 * 16 + 5);
    for (size_t i = 0; i < root.size(); ++i) root[i] = misses[i % (sizeof misses / sizeof misses[0])];
    {
        Reachability r;
        BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
        r.scan_root(root.data(), root.data() + root.size());
        r.classify();
        for (void* b : blocks) BOOST_TEST((c.kind_of(b) == Leak_kind::definite));
    }
    // Block i at word 6i + i % 8 (each of a group's 8 places taken by
    // one block or more); the last one in the tail, as an interior pointer.
    for (size_t i = 0; i + 1 < blocks.size(); ++i) root[6 * i + i % 8] = reinterpret_cast<uintptr_t>(blocks[i]);
    root[root.size() - 2] = reinterpret_cast<uintptr_t>(blocks.back()) + 8;
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    r.scan_root(root.data(), root.data() + root.size());
    r.classify();
    for (void* b : blocks) BOOST_TEST((c.kind_of(b) == Leak_kind::reachable));
}

BOOST_AUTO_TEST_CASE(interior_pointers_reach_small_large_and_huge_blocks) {
    Test_heap req;
    void* small = req->alloc(200);
    void* large = req->alloc(20000);
    void* huge = req->alloc(5 << 20);
    void* lost = req->alloc(200);
    for (void* p : {small, lost}) memset(p, 0, 200);
    Candidates c;
    c.add(small, 200);
    c.add(large, 20000);
    c.add(huge, 5 << 20);
    c.add(lost, 200);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    const char* roots[3] = {static_cast<char*>(small) + 199, static_cast<char*>(large) + 3 * 4096 + 8,
                            static_cast<char*>(huge) + (4 << 20)};
    r.scan_root(roots, roots + 3);
    r.classify();
    BOOST_TEST((c.kind_of(small) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(large) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(huge) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(lost) == Leak_kind::definite));
    // A pointer just past `small`'s slot (224 bytes) is in the next slot: `lost`'s.
    BOOST_REQUIRE(static_cast<char*>(lost) == static_cast<char*>(small) + 224);
    BOOST_TEST(r.resolve(reinterpret_cast<uintptr_t>(small) + 223) == 0);
    BOOST_TEST(r.resolve(reinterpret_cast<uintptr_t>(small) + 224) == 3);
    BOOST_TEST(r.resolve(reinterpret_cast<uintptr_t>(huge) + (5 << 20)) < 0);
}

BOOST_AUTO_TEST_CASE(live_blocks_of_other_heaps_are_roots_freed_ones_are_not) {
    Test_heap req, own;
    void* held = req->alloc(64);
    void* dropped = req->alloc(64);
    memset(held, 0, 64);
    memset(dropped, 0, 64);
    void* holder = own->alloc(64);
    memset(holder, 0, 64);
    link(holder, 5, held);
    void* stale = own->alloc(64);
    memset(stale, 0, 64);
    link(stale, 5, dropped);
    own->free_owned(stale);  // its words beyond the link stay: they must not count
    Candidates c;
    c.add(held, 64);
    c.add(dropped, 64);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    r.scan_heap(own.heap);
    r.scan_heap(req.heap);  // its non-candidate blocks only: none here
    r.classify();
    BOOST_TEST((c.kind_of(held) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(dropped) == Leak_kind::definite));
}

// A block its heap's table says an earlier scan found lost is a root only
// when the heap is not the one left out; left out and covered, the heap is
// not read at all.
BOOST_DATA_TEST_CASE(blocks_found_lost_are_no_roots_in_the_heap_left_out, boost::unit_test::data::make({true, false}),
                     runtime_or_reported) {
    Test_heap req;
    Block_table table;
    req->blocks = &table;
    void* lost = req->alloc(64);
    void* runtime = req->alloc(64);
    void* dropped = req->alloc(64);
    void* held = req->alloc(64);
    for (void* p : {lost, runtime, dropped, held}) memset(p, 0, 64);
    link(lost, 3, dropped);
    link(runtime, 3, held);
    BOOST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(lost), 64, 0, k_block_reported | k_block_lost}));
    // Reported by a request whose scan could not run, not found lost: a
    // root like the runtime's.
    BOOST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(runtime), 64, 0,
                                          (runtime_or_reported ? k_block_runtime : k_block_reported | k_block_carried)}));
    auto kinds = [&](const Heap* left_out, bool covered) {
        Candidates c;
        c.add(dropped, 64);
        c.add(held, 64);
        Reachability r;
        BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
        r.leave_out_lost(left_out, covered);
        r.scan_heap(req.heap);
        r.classify();
        return std::pair{c.kind_of(dropped), c.kind_of(held)};
    };
    auto [d1, h1] = kinds(nullptr, false);  // every non-candidate is a root
    BOOST_TEST((d1 == Leak_kind::reachable && h1 == Leak_kind::reachable));
    auto [d2, h2] = kinds(&req.heap, false);  // the lost one is not; the other is
    BOOST_TEST((d2 == Leak_kind::definite && h2 == Leak_kind::reachable));
    auto [d3, h3] = kinds(&req.heap, true);  // (covered: the caller vouches that no root is there)
    BOOST_TEST((d3 == Leak_kind::definite && h3 == Leak_kind::definite));
    req->blocks = nullptr;
}

// A root pointing into a block found lost before finds it again: what it
// points to is reached, and its mark is cleared (a candidate again next time).
BOOST_AUTO_TEST_CASE(a_lost_block_a_root_points_to_again_is_found_again) {
    Test_heap req;
    Block_table table;
    req->blocks = &table;
    void* lost = req->alloc(64);
    void* child = req->alloc(64);
    memset(lost, 0, 64);
    memset(child, 0, 64);
    link(lost, 2, child);
    link(lost, 4, lost);  // and itself: read once
    BOOST_REQUIRE(table.insert(Block_info{reinterpret_cast<uintptr_t>(lost), 64, 0, k_block_reported | k_block_lost}));
    Candidates c;
    c.add(child, 64);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    r.leave_out_lost(&req.heap, true);
    uintptr_t roots[2] = {0, reinterpret_cast<uintptr_t>(lost) + 8};  // an interior pointer
    r.scan_root(roots, roots + 2);
    r.scan_heap(req.heap);
    r.classify();
    BOOST_TEST((c.kind_of(child) == Leak_kind::reachable));
    BOOST_TEST(r.found_again() == 1u);
    BOOST_TEST(!(table.find(reinterpret_cast<uintptr_t>(lost))->flags & k_block_lost));
    req->blocks = nullptr;
}

BOOST_AUTO_TEST_CASE(a_lost_cycle_is_indirect_and_a_self_pointer_stays_definite) {
    Test_heap req;
    void* a = req->alloc(32);
    void* b = req->alloc(32);
    void* self = req->alloc(32);
    for (void* p : {a, b, self}) memset(p, 0, 32);
    link(a, 2, b);
    link(b, 2, a);
    link(self, 2, self);
    Candidates c;
    c.add(a, 32);
    c.add(b, 32);
    c.add(self, 32);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    r.classify();
    BOOST_TEST((c.kind_of(a) == Leak_kind::indirect));
    BOOST_TEST((c.kind_of(b) == Leak_kind::indirect));
    BOOST_TEST((c.kind_of(self) == Leak_kind::definite));
}

BOOST_AUTO_TEST_CASE(many_blocks_deep_chains_do_not_overflow) {
    Test_heap req;
    constexpr int n = 200000;
    std::vector<void*> nodes(n);
    for (int i = 0; i < n; ++i) {
        nodes[i] = req->alloc(16);
        memset(nodes[i], 0, 16);
    }
    for (int i = 0; i + 1 < n; ++i) link(nodes[i], 0, nodes[i + 1]);
    Candidates c;
    for (void* p : nodes) c.add(p, 16);
    Reachability r;
    BOOST_REQUIRE(r.prepare(c.leaks.data(), c.leaks.size()));
    const void* root = nodes[n / 2];
    r.scan_root(&root, &root + 1);
    r.classify();
    BOOST_TEST((c.kind_of(nodes[0]) == Leak_kind::definite));
    BOOST_TEST((c.kind_of(nodes[1]) == Leak_kind::indirect));
    BOOST_TEST((c.kind_of(nodes[n / 2 - 1]) == Leak_kind::indirect));
    BOOST_TEST((c.kind_of(nodes[n / 2]) == Leak_kind::reachable));
    BOOST_TEST((c.kind_of(nodes[n - 1]) == Leak_kind::reachable));
}

BOOST_AUTO_TEST_SUITE_END()
