// Remote frees from several threads (onto the remote stack, and in chains
// through the freeing thread's outbox), and heap adoption after a thread exits.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "heap_pool.hpp"
#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Rng;
using zmm::test::Test_heap;

BOOST_AUTO_TEST_SUITE(threads)

// A heap a thread took, filled (fill(heap)) and left to the pool.
template <class Fill>
Heap* heap_left_by_a_thread(Fill fill) {
    Heap* h = nullptr;
    std::thread t([&] {
        char token = 0;
        h = heap_pool::acquire(&token);
        fill(h);
        heap_pool::abandon(h);
    });
    t.join();
    return h;
}

// 2000 blocks of 1000 bytes in a heap, all freed again: its memory stays
// resident.
void alloc_and_free_2000(Heap* h) {
    std::vector<void*> blocks;
    for (int i = 0; i < 2000; ++i) blocks.push_back(h->alloc(1000));
    for (void* p : blocks) h->free_owned(p);
}

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
    size_t used = h->usage();
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
    BOOST_TEST(h->usage() == used);  // nothing freed yet: all on the remote stack
    BOOST_TEST(h->has_remote());
    h->drain_remote();
    BOOST_TEST(h->remote.load() == nullptr);
    BOOST_TEST(h->retired == nullptr);
    BOOST_TEST(!h->has_remote());
    BOOST_TEST(h->usage() == 0u);
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
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// Small blocks freed by another thread wait in its outbox, by bin, until a
// chain is full (or flushed), then go to their heap's bin stack in one push;
// the owner takes a stack whole when its bin runs out. Usage counts them
// freed once they are sent.
BOOST_AUTO_TEST_CASE(remote_small_frees_travel_in_chains) {
    Test_heap h, sender;
    h->takes_chains = true;
    const unsigned bin = size_to_bin(100);
    const uint32_t per_chain = outbox_chain_limit(bin);
    BOOST_TEST(per_chain == (4096 + 111) / 112);  // 100 B: the 112-byte bin
    std::vector<void*> blocks;
    for (uint32_t i = 0; i < 3 * per_chain + 5; ++i) blocks.push_back(h->alloc(100));
    void* big = h->alloc(10000);
    const size_t used = h->usage();
    char other_thread = 0;
    for (uint32_t i = 0; i + 1 < per_chain; ++i) Heap::free_any(blocks[i], &other_thread, &sender.heap);
    BOOST_TEST(sender->outbox[bin].count == per_chain - 1);
    BOOST_TEST(sender->outbox[bin].to == &h.heap);
    BOOST_TEST(h->remote_bins[bin].chains.load() == nullptr);
    Heap_stats s;
    h->stats(s);
    BOOST_TEST(s.size == used);  // (in the sender's stats, the blocks count as gone)
    Heap::free_any(blocks[per_chain - 1], &other_thread, &sender.heap);  // the chain is full: sent
    BOOST_TEST(sender->outbox[bin].count == 0u);
    BOOST_TEST(sender->outbox_chains() == 0u);
    BOOST_TEST(h->remote_bins[bin].chains.load() == blocks[per_chain - 1]);
    BOOST_TEST(h->remote_bins[bin].blocks.load() == per_chain);
    h->stats(s);
    BOOST_TEST(s.size == used - per_chain * k_bin_size[bin]);
    BOOST_TEST(h->usage() == used);  // not taken yet
    // A large block goes to the remote stack as before.
    Heap::free_any(big, &other_thread, &sender.heap);
    BOOST_TEST(h->remote.load() == big);
    for (uint32_t i = per_chain; i < 3 * per_chain + 5; ++i) Heap::free_any(blocks[i], &other_thread, &sender.heap);
    BOOST_TEST(sender->outbox[bin].count == 5u);
    sender->flush_outbox();
    BOOST_TEST(sender->outbox_chains() == 0u);
    BOOST_TEST(h->remote_bins[bin].blocks.load() == 3 * per_chain + 5);
    // The owner's bin is empty: its next allocation takes the whole stack,
    // newest chain first, and reuses a slot another thread freed.
    std::vector<void*> rest;  // the run's unused slots
    while (h->free_slot[bin] != k_list_end) rest.push_back(h->pop_small(bin));
    const size_t before = h->usage();
    void* again = h->alloc(100);
    BOOST_TEST(again == blocks[3 * per_chain + 4]);
    BOOST_TEST(h->remote_bins[bin].chains.load() == nullptr);
    BOOST_TEST(h->usage() == before - (3 * per_chain + 5) * k_bin_size[bin] + k_bin_size[bin]);
    // Every slot is on the free list, once: allocating them all gives each back.
    std::vector<void*> taken{again};
    for (uint32_t i = 1; i < 3 * per_chain + 5; ++i) taken.push_back(h->alloc(100));
    std::sort(taken.begin(), taken.end());
    std::vector<void*> sorted = blocks;
    std::sort(sorted.begin(), sorted.end());
    BOOST_TEST(taken == sorted);
    for (void* p : taken) h->free_owned(p);
    for (void* p : rest) h->free_owned(p);
    h->drain_remote();
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// The preload's inline case of a cross-thread free (try_free_to_outbox): a
// small slot of a live heap that takes chains joins the outbox's chain for
// that heap; anything else is declined (-1) with nothing done; a full chain
// is the caller's to send (bin + 1). free_in_chunk_of_other, the slow path
// behind it, starts a chain for another heap and sends full ones itself.
BOOST_AUTO_TEST_CASE(the_inline_cross_thread_free_joins_a_chain_or_declines) {
    Test_heap h, h2, sender;
    h->takes_chains = true;
    h2->takes_chains = true;
    char other_thread = 0;
    const unsigned bin = size_to_bin(100);
    const uint32_t per_chain = outbox_chain_limit(bin);
    std::vector<void*> blocks;
    for (uint32_t i = 0; i < per_chain + 1; ++i) blocks.push_back(h->alloc(100));
    void* big = h->alloc(10000);
    void* own = sender->alloc(100);
    void* of_h2 = h2->alloc(100);
    // No chain for h yet: declined (the slow path starts one).
    BOOST_TEST(sender->try_free_to_outbox(blocks[0], &other_thread) == -1);
    BOOST_TEST(sender->outbox_chains() == 0u);
    Heap::free_in_chunk_of_other(blocks[0], &other_thread, &sender.heap);
    BOOST_TEST(sender->outbox[bin].to == &h.heap);
    BOOST_TEST(sender->outbox[bin].count == 1u);
    for (uint32_t i = 1; i + 1 < per_chain; ++i)
        BOOST_TEST(sender->try_free_to_outbox(blocks[i], &other_thread) == 0);
    BOOST_TEST(sender->outbox[bin].count == per_chain - 1);
    BOOST_TEST(sender->outbox[bin].tail == blocks[0]);
    BOOST_TEST(sender->outbox[bin].head == blocks[per_chain - 2]);
    BOOST_TEST(h->holds_link(blocks[1]));  // free: a second free is a double free
    // The last block fills the chain: the caller sends it.
    BOOST_TEST(sender->try_free_to_outbox(blocks[per_chain - 1], &other_thread) == static_cast<int>(bin) + 1);
    BOOST_TEST(sender->outbox[bin].count == per_chain);
    sender->send_outbox_chain(bin);
    BOOST_TEST(sender->outbox_chains() == 0u);
    BOOST_TEST(h->remote_bins[bin].chains.load() == blocks[per_chain - 1]);
    BOOST_TEST(h->remote_bins[bin].blocks.load() == per_chain);
    // Declined, nothing done: a large block, an interior pointer, a block of
    // the caller's own heap, a block of a heap whose thread left, a block of
    // another heap than the bin's chain goes to.
    Heap::free_in_chunk_of_other(blocks[per_chain], &other_thread, &sender.heap);  // a new chain for h
    BOOST_TEST(sender->try_free_to_outbox(big, &other_thread) == -1);
    BOOST_TEST(sender->try_free_to_outbox(static_cast<char*>(blocks[0]) + 16, &other_thread) == -1);
    BOOST_TEST(sender->try_free_to_outbox(own, &sender.token) == -1);
    BOOST_TEST(sender->try_free_to_outbox(of_h2, &other_thread) == -1);
    h2->owner.store(nullptr);
    BOOST_TEST(sender->try_free_to_outbox(of_h2, &other_thread) == -1);
    h2->owner.store(&h2.token);
    BOOST_TEST(sender->outbox[bin].count == 1u);
    BOOST_TEST(sender->outbox[bin].to == &h.heap);
    // The slow path takes them all as before.
    Heap::free_in_chunk_of_other(big, &other_thread, &sender.heap);
    Heap::free_in_chunk_of_other(of_h2, &other_thread, &sender.heap);  // h's chain sent, one for h2
    BOOST_TEST(sender->outbox[bin].to == &h2.heap);
    sender->flush_outbox();
    sender->free_owned(own);
    h->drain_remote();
    h2->drain_remote();
    BOOST_TEST(h->usage() == 0u);
    BOOST_TEST(h2->usage() == 0u);
    BOOST_TEST(h->check() == nullptr);
}

// A chain whose heap's bin is not empty joins its free list; a heap not
// taking chains (a request heap) gets its blocks on the remote stack.
BOOST_AUTO_TEST_CASE(chains_join_a_free_list_and_skip_request_heaps) {
    Test_heap h, sender, request;
    h->takes_chains = true;
    char other_thread = 0;
    void* a = h->alloc(40);
    void* b = h->alloc(40);
    const unsigned bin = size_to_bin(40);
    Heap::free_any(a, &other_thread, &sender.heap);
    sender->flush_outbox();
    h->free_owned(b);
    h->drain_remote();
    BOOST_TEST(h->free_slot[bin] == a);
    BOOST_TEST(h->usage() == 0u);
    void* r = request->alloc(40);
    Heap::free_any(r, &other_thread, &sender.heap);
    BOOST_TEST(sender->outbox_chains() == 0u);
    BOOST_TEST(request->remote.load() == r);
    request->drain_remote();
    BOOST_TEST(request->usage() == 0u);
}

// A forked child's new key reaches the chains: in outboxes and on stacks.
BOOST_AUTO_TEST_CASE(rekey_rewrites_chains) {
    Test_heap h, sender;
    h->takes_chains = true;
    char other_thread = 0;
    std::vector<void*> blocks;
    for (int i = 0; i < 200; ++i) blocks.push_back(h->alloc(24));
    for (int i = 0; i < 150; ++i) Heap::free_any(blocks[i], &other_thread, &sender.heap);
    BOOST_TEST(h->remote_bins[size_to_bin(24)].chains.load() != nullptr);
    BOOST_TEST(sender->outbox_chains() == 1u);
    const uint64_t fresh = 0x0123456789abcdefull;
    h->rekey(fresh);
    sender->rekey(fresh);
    sender->flush_outbox();
    for (int i = 150; i < 200; ++i) h->free_owned(blocks[i]);
    h->drain_remote();
    BOOST_TEST(h->usage() == 0u);
    for (int i = 0; i < 400; ++i) blocks.push_back(h->alloc(24));  // pops every slot: checked shadows
    BOOST_TEST(h->check() == nullptr);
}

// Threads freeing into one heap through their outboxes while its owner
// allocates and frees: every block comes back once.
BOOST_AUTO_TEST_CASE(chains_from_several_threads) {
    Test_heap h;
    h->takes_chains = true;
    constexpr int k_threads = 4, k_per_thread = 20000;
    std::vector<std::vector<void*>> blocks(k_threads);
    Rng rng(7);
    for (int t = 0; t < k_threads; ++t)
        for (int i = 0; i < k_per_thread; ++i) blocks[t].push_back(h->alloc(1 + rng.below(3072)));
    std::atomic<int> running{k_threads};
    std::vector<std::thread> threads;
    for (int t = 0; t < k_threads; ++t)
        threads.emplace_back([&, t] {
            Test_heap own;  // the thread's persistent heap: its outbox
            for (void* p : blocks[t]) Heap::free_any(p, &own.token, &own.heap);
            own->flush_outbox();
            --running;
        });
    std::vector<void*> mine;
    while (running.load() > 0) {
        for (int i = 0; i < 500; ++i) mine.push_back(h->alloc(16 + (i % 300) * 8));
        for (void* p : mine) h->free_owned(p);
        mine.clear();
    }
    for (auto& th : threads) th.join();
    h->drain_remote();
    BOOST_TEST(h->usage() == 0u);
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
        BOOST_TEST(h->usage() == 0u);
        BOOST_TEST(h->check() == nullptr);
        heap_pool::abandon(h);
    });
    b.join();
    // One heap served both threads (a new one, or one earlier tests pooled).
    BOOST_TEST(heap_pool::heaps_count() <= before + 1);
}

// A thread's heap, unused, goes back to the pool for one that waits there
// (heap_pool::exchange, the preload's take_heap_of): the pool keeps its
// count, the heap given back is the next one taken; a heap that is not in
// the pool (owned) is refused, and nothing changes.
BOOST_AUTO_TEST_CASE(a_heap_is_exchanged_for_one_in_the_pool) {
    char token_a = 0, token_b = 0, token_c = 0, token_d = 0;
    Heap* a = heap_pool::acquire(&token_a);
    Heap* b = heap_pool::acquire(&token_b);
    BOOST_TEST_REQUIRE((a && b && a != b));
    void* left = a->alloc(100);
    heap_pool::abandon(a);
    heap_pool::abandon(b);
    const unsigned pooled = heap_pool::pooled_count();
    Heap* c = heap_pool::acquire(&token_c);
    BOOST_TEST_REQUIRE(c == b);  // pooled last
    BOOST_TEST(heap_pool::exchange(c, a, &token_c));
    BOOST_TEST(a->owner.load() == &token_c);
    BOOST_TEST(b->owner.load() == nullptr);
    BOOST_TEST(heap_pool::pooled_count() == pooled - 1);
    a->free_owned(left);  // a's block is the new owner's to free
    BOOST_TEST(a->usage() == 0u);
    Heap* d = heap_pool::acquire(&token_d);
    BOOST_TEST(d == b);
    BOOST_TEST(!heap_pool::exchange(d, a, &token_d));  // a is owned
    BOOST_TEST(a->owner.load() == &token_c);
    BOOST_TEST(d->owner.load() == &token_d);
    heap_pool::abandon(a);
    heap_pool::abandon(d);
}

// A heap that waits in the pool for 100 ms or more gives its memory back
// when a thread leaves; its live blocks stay. One pooled just now keeps its
// memory, as does the heap a starting thread takes. Blocks freed into it
// while it waits make it wait anew, then go back too; their pages at once,
// past 1 MiB.
BOOST_AUTO_TEST_CASE(idle_pooled_heaps_are_trimmed) {
    void* kept = nullptr;
    void* kept_large = nullptr;
    Heap* idle = heap_left_by_a_thread([&](Heap* h) {
        std::vector<void*> blocks;
        for (int i = 0; i < 2000; ++i) blocks.push_back(h->alloc(1000));
        blocks.push_back(h->alloc(3u << 20));  // huge: cached when freed
        kept = h->alloc(64);
        kept_large = h->alloc(1536u << 10);
        for (void* p : blocks) h->free_owned(p);
    });
    const size_t before = idle->real_size;
    BOOST_TEST(before > 2 * k_chunk_size);
    auto start_and_leave = [] {
        std::thread t([] {
            char token = 0;
            heap_pool::abandon(heap_pool::acquire(&token));
        });
        t.join();
    };
    // The next thread takes the idle heap (pooled last) and gives it back:
    // pooled just now, nothing is trimmed.
    start_and_leave();
    BOOST_TEST(idle->real_size == before);
    // Idle for long (as if): a thread start does not trim (it takes it).
    idle->pooled_ns -= 200'000'000;
    std::thread c([&] {
        char token = 0;
        Heap* h = heap_pool::acquire(&token);
        BOOST_TEST(h == idle);
        BOOST_TEST(idle->real_size == before);
        heap_pool::abandon(h);
    });
    c.join();
    std::thread d([&] {
        char token = 0;
        Heap* own = heap_pool::acquire(&token);  // idle, again
        Heap* second = heap_pool::acquire(&token);  // as a second thread would
        heap_pool::abandon(own);
        BOOST_TEST(idle->real_size == before);  // pooled just now
        idle->pooled_ns -= 200'000'000;
        heap_pool::abandon(second);  // a thread leaves: the idle heap is trimmed
    });
    d.join();
    const size_t live_chunks = Chunk::of(kept) == Chunk::of(kept_large) ? 1 : 2;
    BOOST_TEST(idle->real_size == live_chunks * k_chunk_size);  // the chunks of the live blocks
    BOOST_TEST(idle->pooled_ns == 0u);
    BOOST_TEST(Heap::usable_size(kept) == 64u);
    BOOST_TEST(idle->usage() == 64u + (1536u << 10));
    // A block freed into it while it waits: its pages go back at once (1.5
    // MiB), and it waits anew; then the chunk it leaves empty, if any, goes
    // (the one of the 64-byte block stays).
    char token = 0;
    Heap::free_any(kept_large, &token);
    heap_pool::reclaim_if_abandoned(idle, &token);
    BOOST_TEST(idle->pooled_ns != 0u);
    BOOST_TEST(idle->dirty_pages == 0u);
    BOOST_TEST(idle->real_size == live_chunks * k_chunk_size);
    idle->pooled_ns -= 200'000'000;
    start_and_leave();  // takes the heap pooled last (d's second), leaves: trims the idle one
    BOOST_TEST(idle->pooled_ns == 0u);
    BOOST_TEST(idle->real_size == k_chunk_size);  // the 64-byte block's
    Heap::free_any(kept, &token);
    heap_pool::reclaim_if_abandoned(idle, &token);
    BOOST_TEST(idle->usage() == 0u);
}

// A bin's new run trims idle pooled heaps too (not only a purge check or a
// thread's exit): a program that only allocates small blocks gets their
// memory back.
BOOST_AUTO_TEST_CASE(a_new_run_trims_idle_pooled_heaps) {
    Heap* idle = heap_left_by_a_thread(alloc_and_free_2000);
    const size_t before = idle->real_size;
    BOOST_TEST(before >= k_chunk_size);
    idle->pooled_ns -= 200'000'000;  // idle for long (as if)
    std::this_thread::sleep_for(std::chrono::milliseconds(110));  // (a trim at most every 100 ms)
    char token = 0;
    Heap* other = heap_pool::new_request_heap(&token);
    BOOST_TEST_REQUIRE(other);
    BOOST_TEST(idle->pooled_ns != 0u);
    void* q = other->alloc(2000);  // its first run: the idle heap is trimmed
    BOOST_TEST(idle->pooled_ns == 0u);
    BOOST_TEST(idle->real_size < before);
    other->free_owned(q);
}

// A chain whose heap's thread left while the chain waited in an outbox is
// taken at once (its blocks are free for the heap's next thread, and for
// malloc_trim), as a direct free into an abandoned heap is.
BOOST_AUTO_TEST_CASE(chains_into_an_abandoned_heap_are_reclaimed) {
    std::vector<void*> blocks;
    Heap* first = nullptr;
    std::thread a([&] {
        char token = 0;
        Heap* h = heap_pool::acquire(&token);
        first = h;
        for (int i = 0; i < 10; ++i) blocks.push_back(h->alloc(64));
        h->takes_chains = true;
        Test_heap sender;  // another thread's heap: its outbox
        for (void* p : blocks) Heap::free_any(p, &sender.token, &sender.heap);  // (10 blocks: one chain, not full)
        BOOST_TEST(sender->outbox_chains() == 1u);
        heap_pool::abandon(h);  // the thread leaves, the chain still in the outbox
        sender->flush_outbox();
        BOOST_TEST(h->remote_bins[size_to_bin(64)].chains.load() == nullptr);
        BOOST_TEST(h->usage() == 0u);
    });
    a.join();
    BOOST_TEST(first->owner.load() == nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
