/* What happens to a request's leaked blocks at its end (tests/requests):
 *
 *   reclaim keep      (ZMM_RECLAIM unset) the leaks are merged into the
 *                     thread's heap: still valid, still counted in the
 *                     process's usage, and the program may free them later
 *   reclaim release   (ZMM_RECLAIM=1) the leaks are released at the end, as
 *                     ZendMM does: the process's usage is as before the request
 *
 * The request leaks 100 blocks of 1000 bytes, one of 64 KiB and one of
 * 3 MiB + 100 (from leak_small, leak_large, leak_huge). The process's usage
 * is checked exactly only with a second argument "exact", under ZMM_LEAKS=0:
 * a report symbolizes, and that allocates (persistent memory); check.py
 * runs each mode both ways.
 * Prints "FAIL ..." on failure and "ok" at the end. */
#include <zmm/zmm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selfcheck.h"

#define NOINLINE __attribute__((noinline))
#define MIB ((size_t)1 << 20)

static void* g_small[100];
static void* g_large;
static void* g_huge;

NOINLINE static void leak_small(void) {
    for (int i = 0; i < 100; ++i) {
        g_small[i] = malloc(1000);
        memset(g_small[i], i, 1000);
    }
}
NOINLINE static void leak_large(void) {
    g_large = malloc(65536);
    memset(g_large, 'L', 65536);
}
NOINLINE static void leak_huge(void) {
    g_huge = malloc(3 * MIB + 100);
    memset(g_huge, 'H', 3 * MIB + 100);
}

int main(int argc, char** argv) {
    int release = argc > 1 && strcmp(argv[1], "release") == 0;
    int exact = argc > 2 && strcmp(argv[2], "exact") == 0;
    printf("reclaim test (%s)\n", release ? "release" : "keep");
    fflush(stdout);
    /* A first, clean request: what the first begin sets up (the unwinder)
     * is persistent, and allocated before the figures below. */
    zmm_request_begin("warm-up");
    free(malloc(10));
    CHECK(zmm_request_end() == 0);

    size_t live0 = zmm_memory_usage(0);
    CHECK(zmm_request_begin("leaky") > 0);
    leak_small();
    leak_large();
    leak_huge();
    size_t in_request = zmm_memory_usage(0);
    const size_t leaked_bytes = 100 * 1024 + 65536 + 3 * MIB + 4096;
    CHECK(in_request == leaked_bytes);
    long leaked = zmm_request_end();
    CHECK(leaked == 102);
    size_t live1 = zmm_memory_usage(0);
    printf("process usage %zu before the request, %zu after\n", live0, live1);
    if (release) {
        /* Released: the process holds no more than before. */
        if (exact) CHECK(live1 == live0);
        /* The next request starts from the released memory. */
        CHECK(zmm_request_begin("after") > 0);
        CHECK(zmm_memory_usage(0) == 0);
        void* p = malloc(1000);
        CHECK(p != NULL);
        free(p);
        CHECK(zmm_request_end() == 0);
    } else {
        /* Kept: valid, counted, and freed here. */
        if (exact) CHECK(live1 == live0 + leaked_bytes);
        for (int i = 0; i < 100; ++i) {
            unsigned char* b = g_small[i];
            CHECK(b[0] == i && b[999] == i);
        }
        CHECK(((char*)g_large)[65535] == 'L');
        CHECK(((char*)g_huge)[3 * MIB + 99] == 'H');
        /* The next request does not count them, nor report their frees. */
        CHECK(zmm_request_begin("frees the leaks") > 0);
        for (int i = 0; i < 100; ++i) free(g_small[i]);
        free(g_large);
        free(g_huge);
        CHECK(zmm_memory_usage(0) == 0);
        CHECK(zmm_request_end() == 0);
        if (exact) CHECK(zmm_memory_usage(0) == live0);
    }
    printf(g_failures ? "FAIL\n" : "ok\n");
    return g_failures ? 1 : 0;
}
