/* zmm_memory_usage() and zmm_memory_peak_usage() against known allocation
 * patterns (tests/requests), for both values of `real`:
 *   real == 0: bytes in blocks, as ZendMM counts them: the size class (bin)
 *              or the page run actually used, huge blocks page-rounded;
 *   real != 0: OS memory: 2 MiB per chunk, plus huge mappings.
 * Inside a request the figures are the request's; outside, the process's.
 * Run with ZMM_LEAKS=0: a leak report symbolizes, which allocates persistent
 * memory and would move the process's figures checked here.
 * Prints "FAIL ..." for each failed check and "ok" at the end; exit 1 on failure. */
#include <zmm/zmm.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selfcheck.h"

#define KIB ((size_t)1024)
#define MIB ((size_t)1 << 20)

#define CHECK_EQ(actual, expected)                                                             \
    do {                                                                                       \
        size_t a_ = (actual), e_ = (expected);                                                 \
        if (a_ != e_) {                                                                        \
            printf("FAIL %s:%d: %s == %zu, expected %s == %zu\n", __FILE__, __LINE__, #actual, \
                   a_, #expected, e_);                                                         \
            ++g_failures;                                                                      \
        }                                                                                      \
    } while (0)


static void* g_a[100];
static void* g_b[100];

/* The growth of usage(0) that one allocation of `size` bytes causes. */
static size_t delta_of(size_t size, void** out) {
    size_t before = zmm_memory_usage(0);
    *out = malloc(size);
    return zmm_memory_usage(0) - before;
}

int main(void) {
    printf("usage test\n"); /* stdout's buffer: before any request */
    fflush(stdout);
    if (!zmm_active()) {
        printf("FAIL not running on zmm\n");
        return 1;
    }

    /* Outside requests: the process's figures. */
    void* persistent = malloc(1000);
    size_t process_before = zmm_memory_usage(0);
    for (int i = 0; i < 100; ++i) g_a[i] = malloc(1000);
    CHECK_EQ(zmm_memory_usage(0) - process_before, 100 * 1024);
    CHECK(zmm_memory_peak_usage(0) >= zmm_memory_usage(0));
    CHECK(zmm_memory_usage(1) >= 2 * MIB);
    CHECK(zmm_memory_peak_usage(1) >= zmm_memory_usage(1));
    for (int i = 0; i < 100; ++i) free(g_a[i]);
    CHECK_EQ(zmm_memory_usage(0), process_before);

    /* ---- the first request: a fresh heap ---- */
    if (zmm_request_begin("usage") <= 0) {
        printf("FAIL zmm_request_begin\n");
        return 1;
    }
    CHECK_EQ(zmm_memory_usage(0), 0);
    CHECK_EQ(zmm_memory_peak_usage(0), 0);
    CHECK_EQ(zmm_memory_usage(1), 0);
    CHECK_EQ(zmm_memory_peak_usage(1), 0);

    /* 100 blocks of 1000 bytes: the 1024-byte bin; one chunk. */
    for (int i = 0; i < 100; ++i) g_a[i] = malloc(1000);
    CHECK_EQ(zmm_memory_usage(0), 100 * 1024);
    CHECK_EQ(zmm_memory_peak_usage(0), 100 * 1024);
    CHECK_EQ(zmm_memory_usage(1), 2 * MIB);
    CHECK_EQ(zmm_memory_peak_usage(1), 2 * MIB);

    /* Free half: usage halves, the peak stays. */
    for (int i = 0; i < 50; ++i) free(g_a[i]);
    CHECK_EQ(zmm_memory_usage(0), 50 * 1024);
    CHECK_EQ(zmm_memory_peak_usage(0), 100 * 1024);
    CHECK_EQ(zmm_memory_usage(1), 2 * MIB);
    /* A persistent block freed inside the request is not the request's. */
    free(persistent);
    CHECK_EQ(zmm_memory_usage(0), 50 * 1024);

    /* 100 more: the freed slots first, then new ones; peak 150 blocks. */
    for (int i = 0; i < 100; ++i) g_b[i] = malloc(1000);
    CHECK_EQ(zmm_memory_usage(0), 150 * 1024);
    CHECK_EQ(zmm_memory_peak_usage(0), 150 * 1024);

    /* One block of each kind: what each really takes. */
    void *p17, *p100, *p3000, *p3073, *p5000, *p64k, *pbig;
    CHECK_EQ(delta_of(17, &p17), 32);      /* 16-aligned: the 32-byte bin */
    CHECK_EQ(delta_of(100, &p100), 112);   /* bin 112 */
    CHECK_EQ(delta_of(3000, &p3000), 3072); /* the largest bin */
    CHECK_EQ(delta_of(3073, &p3073), 4096); /* zmm's one-page bin (ZendMM: a one-page run) */
    CHECK_EQ(delta_of(5000, &p5000), 8192); /* two pages */
    CHECK_EQ(delta_of(65536, &p64k), 65536);
    CHECK_EQ(delta_of(2 * MIB - 4 * KIB, &pbig), 2 * MIB - 4 * KIB); /* the largest run: a chunk of its own */
    CHECK_EQ(zmm_memory_usage(1), 4 * MIB);
    size_t before = zmm_memory_usage(0);
    void* pc = calloc(10, 10);
    CHECK_EQ(zmm_memory_usage(0) - before, 112);
    /* realloc to another bin: the old slot goes back. */
    before = zmm_memory_usage(0);
    p100 = realloc(p100, 200);
    CHECK_EQ(zmm_memory_usage(0) - before, 224 - 112);
    /* realloc of a run in place (shrink): 8 pages -> 2 (a run shrunk to
     * more than ZendMM's largest bin stays a run: no copy) */
    void* shrink = malloc(32768);
    before = zmm_memory_usage(0);
    void* shrunk = realloc(shrink, 5000);
    CHECK(shrunk == shrink);
    CHECK_EQ(before - zmm_memory_usage(0), 32768 - 8192);

    /* A huge block: its pages in usage(0); its mapping in usage(1) (zmm
     * maps one page more, for the block's header). */
    size_t real_before = zmm_memory_usage(1);
    before = zmm_memory_usage(0);
    void* huge = malloc(3 * MIB + 100);
    size_t huge_pages = 3 * MIB + 4 * KIB;
    CHECK_EQ(zmm_memory_usage(0) - before, huge_pages);
    size_t real_huge = zmm_memory_usage(1) - real_before;
    CHECK(real_huge == huge_pages || real_huge == huge_pages + 4 * KIB);
    size_t peak = zmm_memory_usage(0), real_peak = zmm_memory_usage(1);
    CHECK_EQ(zmm_memory_peak_usage(0), peak);
    CHECK_EQ(zmm_memory_peak_usage(1), real_peak);

    /* Free it all: usage(0) back to 0; the peaks stay. */
    free(huge);
    CHECK_EQ(zmm_memory_usage(0), peak - huge_pages);
    CHECK_EQ(zmm_memory_peak_usage(0), peak);
    CHECK_EQ(zmm_memory_peak_usage(1), real_peak);
    CHECK(zmm_memory_usage(1) <= real_peak);
    free(p17);
    free(p100);
    free(p3000);
    free(p3073);
    free(p5000);
    free(p64k);
    free(pbig);
    free(pc);
    free(shrunk);
    for (int i = 50; i < 100; ++i) free(g_a[i]);
    for (int i = 0; i < 100; ++i) free(g_b[i]);
    CHECK_EQ(zmm_memory_usage(0), 0);
    CHECK_EQ(zmm_memory_peak_usage(0), peak);
    CHECK_EQ(zmm_memory_peak_usage(1), real_peak);
    CHECK(zmm_memory_usage(1) <= real_peak);
    CHECK_EQ(zmm_memory_usage(1) % (4 * KIB), 0);
    long leaked = zmm_request_end();
    CHECK_EQ((size_t)leaked, 0);

    /* ---- the second request: fresh figures; real counts the chunks kept
     * in the heap's cache from the first (ZendMM's real_size does too). ---- */
    CHECK(zmm_request_begin("usage again") > 0);
    CHECK_EQ(zmm_memory_usage(0), 0);
    CHECK_EQ(zmm_memory_peak_usage(0), 0);
    size_t cached = zmm_memory_usage(1);
    CHECK_EQ(zmm_memory_peak_usage(1), cached);
    CHECK(cached <= real_peak);
    CHECK_EQ(cached % (4 * KIB), 0);
    for (int i = 0; i < 100; ++i) g_a[i] = malloc(1000);
    CHECK_EQ(zmm_memory_usage(0), 100 * 1024);
    CHECK_EQ(zmm_memory_peak_usage(0), 100 * 1024);
    CHECK_EQ(zmm_memory_usage(1), cached ? cached : 2 * MIB); /* a cached chunk, or a new one */
    /* Blocks the request allocated and frees after it ends are its leaks;
     * here they are freed inside: a clean end. */
    for (int i = 0; i < 100; ++i) free(g_a[i]);
    CHECK_EQ(zmm_memory_usage(0), 0);
    CHECK_EQ(zmm_memory_peak_usage(0), 100 * 1024);
    CHECK_EQ((size_t)zmm_request_end(), 0);

    /* ---- a request that leaks: after its end, the leaked bytes are the
     * process's (merged into the thread's heap, ZMM_RECLAIM=0). ---- */
    size_t process = zmm_memory_usage(0);
    CHECK(zmm_request_begin("leaky") > 0);
    for (int i = 0; i < 10; ++i) g_a[i] = malloc(1000);
    CHECK_EQ(zmm_memory_usage(0), 10 * 1024);
    CHECK_EQ((size_t)zmm_request_end(), 10);
    CHECK_EQ(zmm_memory_usage(0) - process, 10 * 1024);
    for (int i = 0; i < 10; ++i) free(g_a[i]);
    CHECK_EQ(zmm_memory_usage(0), process);

    /* ---- blocks an earlier request left, freed or reallocated in place in
     * a later one: not that request's memory (traced or not: found by
     * helper-57, where traced requests counted the free against the later
     * request and reported the in-place realloc as its leak). ---- */
    CHECK(zmm_request_begin("leaves") > 0);
    char* left_huge = malloc(6000000);
    char* left_small = malloc(1000);
    char* left_shrunk = malloc(6000000);
    CHECK_EQ((size_t)zmm_request_end(), 3);
    CHECK(zmm_request_begin("frees them") > 0);
    free(left_huge);
    free(left_small);
    CHECK_EQ(zmm_memory_usage(0), 0);
    CHECK_EQ(zmm_memory_peak_usage(0), 0);
    char* fresh = malloc(6000000);
    CHECK_EQ(zmm_memory_usage(0), 6000640); /* page-rounded */
    CHECK_EQ(zmm_memory_peak_usage(0), 6000640);
    char* in_place = realloc(left_shrunk, 3000000); /* in place: the tail unmapped */
    CHECK(in_place == left_shrunk);
    CHECK_EQ(zmm_memory_usage(0), 6000640);
    CHECK_EQ(zmm_memory_peak_usage(0), 6000640);
    free(fresh);
    CHECK_EQ(zmm_memory_usage(0), 0);
    CHECK_EQ((size_t)zmm_request_end(), 0); /* the shrunk block is the first request's */
    free(in_place);

    printf(g_failures ? "failed\n" : "ok\n");
    return g_failures ? 1 : 0;
}
