// Misuse is diagnosed before it can corrupt the heap. The abort hook turns
// the fatal path into a longjmp back into the test.
#include <boost/test/unit_test.hpp>

#include <vector>

#include <csetjmp>
#include <cstring>
#include <string>

#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Test_heap;

namespace {
std::jmp_buf g_jump;
Misuse g_kind;
const void* g_ptr;
std::string g_message;

void hook(Misuse kind, const void* ptr, const char* message) {
    g_kind = kind;
    g_ptr = ptr;
    g_message = message;
    std::longjmp(g_jump, 1);
}

struct Hooked {
    Hooked() { set_abort_hook(hook); }
    ~Hooked() { set_abort_hook(nullptr); }
};

// Runs f; returns true if it ended in a diagnosis of `kind` about `ptr`.
template <class F>
bool diagnosed(Misuse kind, const void* ptr, F f) {
    g_message.clear();
    if (setjmp(g_jump) == 0) {
        f();
        return false;
    }
    return g_kind == kind && g_ptr == ptr;
}

std::string hex(const void* p) {
    char buf[32];
    snprintf(buf, sizeof buf, "%#lx", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(p)));
    return buf;
}
}  // namespace

BOOST_FIXTURE_TEST_SUITE(misuse, Hooked)

// A huge block freed through the remote stack, its mapping then reused from
// the cache (whole or grown): the link the remote free left must not make
// the new block look freed, whatever the program writes in its first word.
BOOST_AUTO_TEST_CASE(reused_huge_mapping_is_not_a_double_free) {
    Test_heap h;
    for (size_t second : {size_t{3} << 20, size_t{5} << 20}) {
        BOOST_TEST_CONTEXT("reused for " << second) {
            void* p = h->alloc(size_t{4} << 20);
            Heap::free_remote(&h.heap, p);  // as from another thread: onto the remote stack
            h->drain_remote();              // into the cache
            void* q = h->alloc(second);
            BOOST_TEST_REQUIRE(q != nullptr);
            memset(q, 0, 8);  // the program's data: the old link's word, zero
            BOOST_TEST(!diagnosed(Misuse::double_free, q, [&] { Heap::free_remote(&h.heap, q); }));
            h->drain_remote();
        }
    }
    BOOST_TEST(h->usage() == 0u);
}

BOOST_AUTO_TEST_CASE(double_free_small) {
    Test_heap h;
    void* p = h->alloc(40);
    h->free_owned(p);
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { h->free_owned(p); }));
    BOOST_TEST(g_message == "zmm: double free of " + hex(p) + "\n");
    BOOST_TEST(h->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(double_free_separated_by_other_frees) {
    Test_heap h;
    void* p = h->alloc(64);
    void* others[10];
    for (auto& o : others) o = h->alloc(64);
    h->free_owned(p);
    for (auto& o : others) h->free_owned(o);
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { h->free_owned(p); }));
    BOOST_TEST(h->check() == nullptr);
}

BOOST_AUTO_TEST_CASE(double_free_large_and_huge) {
    Test_heap h;
    void* keep = h->alloc(10000);  // keeps the chunk alive
    void* large = h->alloc(50000);
    h->free_owned(large);
    BOOST_TEST(diagnosed(Misuse::double_free, large, [&] { h->free_owned(large); }));
    void* huge = h->alloc(4 * 1024 * 1024);
    h->free_owned(huge);
    BOOST_TEST(diagnosed(Misuse::double_free, huge, [&] { h->free_owned(huge); }));
    h->free_owned(keep);
}

// A huge block freed twice after its cached mapping became a chunk (its
// address is the chunk's header now): still a double free, the chunk left
// intact; so too once the chunk was cached and taken again, and once it was
// unmapped. Any other chunk's own address is an unknown pointer.
BOOST_AUTO_TEST_CASE(double_free_of_a_huge_block_whose_mapping_became_a_chunk) {
    Test_heap h;
    void* huge = h->alloc(3 * 1024 * 1024);
    h->free_owned(huge);
    void* large = h->alloc(100000);  // the new chunk: the mapping's first 2 MiB
    BOOST_TEST_REQUIRE(static_cast<void*>(Chunk::of(large)) == huge);
    BOOST_TEST(diagnosed(Misuse::double_free, huge, [&] { h->free_owned(huge); }));
    BOOST_TEST(diagnosed(Misuse::double_free, huge, [&] { Heap::free_remote(&h.heap, huge); }));
    BOOST_TEST(h->check() == nullptr);
    void* other = h->alloc(2000 * 1024);  // a second chunk, fresh
    BOOST_TEST_REQUIRE(Chunk::of(other) != Chunk::of(large));
    BOOST_TEST(diagnosed(Misuse::unknown_pointer, Chunk::of(other), [&] { h->free_owned(Chunk::of(other)); }));
    h->free_owned(other);
    h->free_owned(large);  // the chunk, empty: to the cache
    BOOST_TEST(h->cached_count == 2u);
    large = h->alloc(100000);
    BOOST_TEST_REQUIRE(static_cast<void*>(Chunk::of(large)) == huge);  // (cached last, taken first)
    BOOST_TEST(diagnosed(Misuse::double_free, huge, [&] { h->free_owned(huge); }));
    h->free_owned(large);
    BOOST_TEST(h->usage() == 0u);
    h->collect();  // the chunks unmapped
    BOOST_TEST(granule_of(huge) == granule_huge_unmapped);
    BOOST_TEST(diagnosed(Misuse::double_free, huge, [&] { h->free_owned(huge); }));
}

BOOST_AUTO_TEST_CASE(double_free_through_remote_stack) {
    Test_heap h;
    void* p = h->alloc(100);
    char other_thread = 0;
    Heap::free_any(p, &other_thread);  // pushed onto the remote stack
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { Heap::free_any(p, &other_thread); }));
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { h->free_owned(p); }));
    h->drain_remote();
    BOOST_TEST(h->usage() == 0u);
}

// A block waiting in another thread's outbox chain is a free slot of its
// heap: freed again from any thread, it is a double free.
BOOST_AUTO_TEST_CASE(double_free_through_an_outbox) {
    Test_heap h, sender;
    h->takes_chains = true;
    void* p = h->alloc(100);
    char* q = static_cast<char*>(h->alloc(100));
    char other_thread = 0;
    Heap::free_any(p, &other_thread, &sender.heap);  // into the sender's outbox
    BOOST_TEST(sender->outbox_chains() == 1u);
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { Heap::free_any(p, &other_thread, &sender.heap); }));
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { h->free_owned(p); }));
    // (the preload's inline case, and the slow path behind it)
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { sender->try_free_to_outbox(p, &other_thread); }));
    BOOST_TEST(diagnosed(Misuse::double_free, p,
                         [&] { Heap::free_in_chunk_of_other(p, &other_thread, &sender.heap); }));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, q + 16, [&] { Heap::free_any(q + 16, &other_thread, &sender.heap); }));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, q + 16,
                         [&] { Heap::free_in_chunk_of_other(q + 16, &other_thread, &sender.heap); }));
    sender->flush_outbox();
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { Heap::free_any(p, &other_thread, &sender.heap); }));
    h->drain_remote();
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { h->free_owned(p); }));
    h->free_owned(q);
    BOOST_TEST(h->usage() == 0u);
}

BOOST_AUTO_TEST_CASE(interior_pointers) {
    Test_heap h;
    char* small = static_cast<char*>(h->alloc(100));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, small + 8, [&] { h->free_owned(small + 8); }));
    char* large = static_cast<char*>(h->alloc(3 * k_page_size));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, large + k_page_size,
                         [&] { h->free_owned(large + k_page_size); }));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, large + 16, [&] { h->free_owned(large + 16); }));
    char* huge = static_cast<char*>(h->alloc(3 * 1024 * 1024));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, huge + 4096, [&] { h->free_owned(huge + 4096); }));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, huge + k_chunk_size,
                         [&] { h->free_owned(huge + k_chunk_size); }));
    // the tail of a 448-byte run (9 slots, 64 bytes unused) is not a slot
    char* b448 = static_cast<char*>(h->alloc(448));
    char* tail = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(b448) & ~(k_page_size - 1)) + 9 * 448;
    BOOST_TEST(diagnosed(Misuse::interior_pointer, tail, [&] { h->free_owned(tail); }));
    BOOST_TEST(h->check() == nullptr);
    h->free_owned(small);
    h->free_owned(large);
    h->free_owned(huge);
    h->free_owned(b448);
}

// zmm's bins past ZendMM's (4096 B, one page; 4608 B, 8 slots in 9 pages):
// a slot's start is a block, anything inside one (a page boundary inside a
// 4608-byte slot too) is an interior pointer, on the fast path and the slow.
BOOST_AUTO_TEST_CASE(interior_pointers_in_zmms_bins) {
    Test_heap h;
    char* page_slot = static_cast<char*>(h->alloc(4000));
    BOOST_TEST_REQUIRE(Heap::usable_size(page_slot) == 4096u);
    BOOST_TEST(Heap::in_small_run(page_slot));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, page_slot + 16, [&] { h->free_owned(page_slot + 16); }));
    BOOST_TEST(!h->free_small_fast(page_slot + 2048));

    std::vector<char*> slots;
    for (int i = 0; i < 8; ++i) slots.push_back(static_cast<char*>(h->alloc(4200)));
    for (char* p : slots) BOOST_TEST_REQUIRE(Heap::usable_size(p) == 4608u);
    // The run's second slot starts 512 bytes into its second page; that
    // page's first byte is inside the first slot.
    char* run = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(slots[0]) & ~(k_page_size - 1));
    BOOST_TEST_REQUIRE(static_cast<void*>(slots[0]) == static_cast<void*>(run));
    BOOST_TEST(static_cast<void*>(slots[1]) == static_cast<void*>(run + 4608));  // (char*: Boost would compare strings)
    BOOST_TEST(diagnosed(Misuse::interior_pointer, run + k_page_size, [&] { h->free_owned(run + k_page_size); }));
    BOOST_TEST(diagnosed(Misuse::interior_pointer, run + 4608 + 16, [&] { h->free_owned(run + 4608 + 16); }));
    BOOST_TEST(!h->free_small_fast(run + 8 * k_page_size));  // inside the last slot, in the run's last page
    BOOST_TEST(h->check() == nullptr);
    h->free_owned(page_slot);
    for (char* p : slots) BOOST_TEST(h->free_small_fast(p));
    BOOST_TEST(h->usage() == 0u);
}

BOOST_AUTO_TEST_CASE(unknown_pointers) {
    Test_heap h;
    int on_stack;
    BOOST_TEST(diagnosed(Misuse::unknown_pointer, &on_stack, [&] { h->free_owned(&on_stack); }));
    char* p = static_cast<char*>(h->alloc(100));
    char* chunk = reinterpret_cast<char*>(Chunk::of(p));
    BOOST_TEST(diagnosed(Misuse::unknown_pointer, chunk, [&] { h->free_owned(chunk); }));  // the header
    char* free_page = chunk + 300 * k_page_size;
    BOOST_TEST(diagnosed(Misuse::unknown_pointer, free_page, [&] { h->free_owned(free_page); }));
    BOOST_TEST(g_message == "zmm: free of unknown pointer " + hex(free_page) + "\n");
    h->free_owned(p);
}

BOOST_AUTO_TEST_CASE(overwritten_free_list_link) {
    Test_heap h;
    auto* a = static_cast<char*>(h->alloc(32));
    auto* b = static_cast<char*>(h->alloc(32));
    h->free_owned(b);
    h->free_owned(a);  // free list: a -> b -> ...
    // a buffer overflow from the slot before `a` overwrites a's link
    memset(a, 0x41, 8);
    BOOST_TEST(diagnosed(Misuse::heap_corrupted, a, [&] { h->alloc(32); }));
    BOOST_TEST(g_message.find("heap corrupted") != std::string::npos);
    // repair, so that the heap can be released
    reinterpret_cast<Free_slot*>(a)->next = reinterpret_cast<Free_slot*>(b);
}

// A list's end fails the pop's shadow test, as a corrupted slot does: the
// preload's pop (try_pop_small) answers nullptr for both, and the slow
// path's (pop_small) tells them apart: nullptr at the end (a refill
// follows), the diagnosis for the slot. Under any key but 0.
BOOST_AUTO_TEST_CASE(the_list_end_and_a_corrupted_slot_share_the_pops_test) {
    const unsigned bin = size_to_bin(48);
    BOOST_TEST(g_empty_heap.key != 0u);
    BOOST_TEST(g_empty_heap.free_slot[bin] == k_list_end);
    BOOST_TEST(g_empty_heap.try_pop_small(bin) == nullptr);
    BOOST_TEST(g_empty_heap.pop_small(bin) == nullptr);
    Test_heap h;
    BOOST_TEST(h->free_slot[bin] == k_list_end);
    BOOST_TEST(h->pop_small(bin) == nullptr);
    void* a = h->alloc(48);  // a new run: the others on the list, the last one linked to the end
    BOOST_TEST(h->free_slot[bin] != k_list_end);
    std::vector<void*> rest;
    while (void* p = h->try_pop_small(bin)) rest.push_back(p);
    BOOST_TEST(rest.size() == k_bin_count[bin] - 1);
    BOOST_TEST(h->free_slot[bin] == k_list_end);
    BOOST_TEST(h->pop_small(bin) == nullptr);
    for (void* p : rest) h->free_owned(p);
    void* b = rest.back();  // the list's head now
    BOOST_TEST(static_cast<void*>(h->free_slot[bin]) == b);
    memset(b, 0x41, 8);
    BOOST_TEST(h->try_pop_small(bin) == nullptr);  // declined, not diagnosed
    BOOST_TEST(diagnosed(Misuse::heap_corrupted, b, [&] { h->pop_small(bin); }));
    reinterpret_cast<Free_slot*>(b)->next = reinterpret_cast<Free_slot*>(rest[rest.size() - 2]);
    h->free_owned(a);
}

BOOST_AUTO_TEST_CASE(realloc_of_freed_block) {
    Test_heap h;
    void* p = h->alloc(200);
    h->free_owned(p);
    BOOST_TEST(diagnosed(Misuse::double_free, p, [&] { h->realloc(p, 150); }));
}

BOOST_AUTO_TEST_SUITE_END()
