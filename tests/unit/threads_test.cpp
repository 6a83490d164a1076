// Remote frees from several threads, and heap adoption after a thread exits.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "heap_pool.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Rng;
using zmm::test::Test_heap;

BOOST_AUTO_TEST_SUITE(threads)

BOOST_AUTO_TEST_CASE(remote_frees_from_several_threads) {
    Test_heap h;
    constexpr int k_threads = 4, k_per_thread = 5000;
    std::vector<std::vector<void*>> blocks(k_threads);
    Rng rng(3);
    for (int t = 0; t < k_threads; ++t)
        for (int i = 0; i < k_per_thread; ++i) {
            size_t size = rng.below(50) == 0 ? 4096 + rng.below(100000) : 1 + rng.below(3072);
            if (i == 0) size = 3 * 1024 * 1024;  // a huge one each
            blocks[t].push_back(h->alloc(size));
        }
    size_t used = h->size;
    BOOST_TEST(used > 0u);
    std::vector<std::thread> threads;
    std::atomic<int> wrong_owner{0};  // Boost.Test's checks are not thread-safe
    for (int t = 0; t < k_threads; ++t)
        threads.emplace_back([&, t] {
            char token = 0;  // another thread: its frees are remote
            for (void* p : blocks[t])
                if (Heap::free_any(p, &token) != &h.heap) ++wrong_owner;
        });
    for (auto& th : threads) th.join();
    BOOST_TEST(wrong_owner.load() == 0);
    BOOST_TEST(h->size == used);  // nothing freed yet: all on the remote stack
    BOOST_TEST(h->has_remote());
    h->drain_remote();
    BOOST_TEST(h->remote.load() == nullptr);
    BOOST_TEST(h->retired == nullptr);
    BOOST_TEST(!h->has_remote());
    BOOST_TEST(h->size == 0u);
    BOOST_TEST(h->huge == nullptr);
    BOOST_TEST(h->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(remote_frees_while_owner_allocates) {
    Test_heap h;
    std::atomic<bool> done{false};
    std::vector<void*> handoff;
    constexpr int k_blocks = 20000;
    for (int i = 0; i < k_blocks; ++i) handoff.push_back(h->alloc(16 + (i % 200) * 8));
    std::thread freer([&] {
        char token = 0;
        for (void* p : handoff) Heap::free_any(p, &token);
        done = true;
    });
    // the owner keeps allocating and freeing; its slow paths drain remotes
    std::vector<void*> mine;
    while (!done.load()) {
        for (int i = 0; i < 1000; ++i) mine.push_back(h->alloc(48));
        for (void* p : mine) h->free_owned(p);
        mine.clear();
        h->drain_remote();
    }
    freer.join();
    h->drain_remote();
    BOOST_TEST(h->size == 0u);
    BOOST_TEST(h->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(abandoned_heaps_are_adopted) {
    unsigned before = heap_pool::heaps_count();
    std::vector<void*> left_behind;
    Heap* first = nullptr;
    std::thread a([&] {
        char token = 0;
        Heap* h = heap_pool::acquire(&token);
        first = h;
        for (int i = 0; i < 100; ++i) left_behind.push_back(h->alloc(64 + i));
        left_behind.push_back(h->alloc(100000));
        heap_pool::abandon(h);
    });
    a.join();
    BOOST_TEST(heap_pool::pooled_count() >= 1u);
    // frees into the abandoned heap work: remote, then reclaimed at once
    char main_token = 0;
    for (size_t i = 0; i < left_behind.size(); i += 2) {
        Heap* owner = Heap::free_any(left_behind[i], &main_token);
        BOOST_TEST_REQUIRE(owner == first);
        heap_pool::reclaim_if_abandoned(owner, &main_token);
    }
    BOOST_TEST(!first->has_remote());
    // the next thread adopts the pooled heap, live blocks and all
    std::thread b([&] {
        char token = 0;
        Heap* h = heap_pool::acquire(&token);
        BOOST_TEST(h == first);
        BOOST_TEST(h->owner.load() == &token);
        for (size_t i = 1; i < left_behind.size(); i += 2) h->free_owned(left_behind[i]);
        BOOST_TEST(h->size == 0u);
        BOOST_TEST(h->check() == nullptr);
        heap_pool::abandon(h);
    });
    b.join();
    BOOST_TEST(heap_pool::heaps_count() == before + 1);  // one heap served both threads
}

BOOST_AUTO_TEST_SUITE_END()
