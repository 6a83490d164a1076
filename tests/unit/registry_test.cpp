// The chunk registry: "is this ours?" for addresses inside, at the edges of
// and outside chunks and huge blocks.
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "test_heap.hpp"

using namespace zmm;
using zmm::test::Test_heap;

namespace {
int g_static_data = 1;
}

BOOST_AUTO_TEST_SUITE(registry)

BOOST_AUTO_TEST_CASE(chunk_addresses) {
    Test_heap h;
    char* p = static_cast<char*>(h->alloc(100));
    char* chunk = reinterpret_cast<char*>(Chunk::of(p));
    BOOST_TEST(granule_of(chunk) == granule_chunk);                    // header
    BOOST_TEST(granule_of(chunk + k_chunk_size - 1) == granule_chunk);  // last byte
    // Before and after: not this chunk (another heap's may sit there: the
    // kernel places mappings side by side, and earlier tests leave heaps).
    auto not_ours = [&](const char* a) { return granule_of(a) != granule_chunk || Chunk::of(a)->heap != &h.heap; };
    BOOST_TEST(not_ours(chunk - 1));
    BOOST_TEST(not_ours(chunk + k_chunk_size));
    BOOST_TEST(Heap::owner_of(p) == &h.heap);
    BOOST_TEST(Heap::usable_size(chunk) == 0u);                   // the header is no block
    BOOST_TEST(Heap::usable_size(chunk + 200 * k_page_size) == 0u);  // a free page
    h->free_owned(p);
}

BOOST_AUTO_TEST_CASE(huge_addresses) {
    Test_heap h;
    const size_t size = 5 * 1024 * 1024 + 12345;
    char* p = static_cast<char*>(h->alloc(size));
    size_t usable = Heap::usable_size(p);
    BOOST_TEST(granule_of(p) == granule_huge);
    BOOST_TEST(granule_of(p + k_chunk_size) == granule_huge_tail);
    BOOST_TEST(granule_of(p + usable - 1) == granule_huge_tail);
    BOOST_TEST(registry_huge_start(p + usable - 1) == static_cast<void*>(p));
    BOOST_TEST(registry_huge_start(p + 3 * 1024 * 1024) == static_cast<void*>(p));
    BOOST_TEST(Heap::owner_of(p) == &h.heap);
    BOOST_TEST(Heap::owner_of(p + 4096) == nullptr);  // interior: not a block start
    BOOST_TEST(Heap::usable_size(p + k_chunk_size) == 0u);
    // Below the block: not the block's (what an earlier block left there, a
    // freed huge block's mark, may be).
    BOOST_TEST(granule_of(p - 1) != granule_huge_tail);
    BOOST_TEST(registry_huge_start(p - 1) != static_cast<void*>(p));
    h->free_owned(p);
    BOOST_TEST(granule_of(p) == granule_huge_freed);
    BOOST_TEST(granule_of(p + k_chunk_size) == granule_none);
    BOOST_TEST(registry_huge_start(p + usable - 1) == nullptr);
}

BOOST_AUTO_TEST_CASE(foreign_addresses) {
    int on_stack = 0;
    void* from_libc = malloc(64);  // the test binary's own malloc: glibc
    const void* foreign[] = {&on_stack, &g_static_data, from_libc, nullptr,
                             reinterpret_cast<void*>(uintptr_t{0xdeadbeefdeadbeef}),
                             reinterpret_cast<void*>(~uintptr_t{0}), reinterpret_cast<void*>(uintptr_t{1} << 47)};
    for (const void* p : foreign) {
        BOOST_TEST_CONTEXT("address " << p) {
            BOOST_TEST(granule_of(p) == granule_none);
            BOOST_TEST(Heap::owner_of(p) == nullptr);
            BOOST_TEST(Heap::usable_size(p) == 0u);
        }
    }
    free(from_libc);
}

BOOST_AUTO_TEST_CASE(released_chunks_are_forgotten) {
    Test_heap h;
    char* p = static_cast<char*>(h->alloc(k_max_large));
    char* chunk = reinterpret_cast<char*>(Chunk::of(p));
    h->free_owned(p);
    h->collect();  // the cached chunk goes back to the OS
    BOOST_TEST(granule_of(chunk) == granule_none);
}

BOOST_AUTO_TEST_SUITE_END()
