/* 10,000 requests in a loop with stable RSS (tests/requests).
 *
 *   loop clean   every request frees what it allocates
 *   loop leaky   every request also leaks a small and a large block (and
 *                every tenth request a huge one), which the program frees
 *                after the request ended; run with ZMM_LEAKS=0 (no 10,000
 *                reports)
 *
 * Each request allocates 300 blocks of mixed sizes (small bins, large runs
 * up to 1 MiB, and every tenth request a huge block of 3 MiB) and frees
 * them. The chunk cache is bounded (ZendMM's average of recent requests'
 * needs), so after the loop RSS (/proc/self/statm, read with read(2)
 * outside requests) and OS memory (zmm_memory_usage(1)) must stay within a
 * bound of their values after the first half of the requests (the caches
 * are warm by then: the check is for growth, not for the caches' size), and the process's
 * live bytes (zmm_memory_usage(0)) must be what they were then.
 * Prints "FAIL ..." on failure, "ok" at the end. */
#include <zmm/zmm.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define MIB ((size_t)1 << 20)

enum { k_requests = 10000, k_blocks = 300, k_warm = k_requests / 2 };

static size_t rss_bytes(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char* p = strchr(buf, ' ');
    return p ? (size_t)strtoull(p + 1, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

static uint64_t g_x = 0x2545f4914f6cdd1du;
static uint64_t next(void) {
    g_x ^= g_x << 13;
    g_x ^= g_x >> 7;
    g_x ^= g_x << 17;
    return g_x;
}

static void* g_live[k_blocks];
static void* g_leaked[3];

NOINLINE static void* leak_small(void) { return malloc(200); }
NOINLINE static void* leak_large(void) { return malloc(20000); }
NOINLINE static void* leak_huge(void) { return malloc(3 * MIB); }

NOINLINE static long one_request(int i, int leaky) {
    if (zmm_request_begin("loop") <= 0) return -2;
    for (int b = 0; b < k_blocks; ++b) {
        uint64_t r = next();
        size_t size = r % 20 == 0 ? 3073 + (r >> 8) % (1 * MIB) : 1 + (r >> 8) % 3072;
        g_live[b] = malloc(size);
        if (!g_live[b]) abort();
        memset(g_live[b], b, size < 256 ? size : 256);
        if (b % 3 == 0) { /* free some at once: reuse inside the request */
            free(g_live[b]);
            g_live[b] = NULL;
        }
    }
    void* huge = NULL;
    if (i % 10 == 0) {
        huge = malloc(3 * MIB);
        memset(huge, 1, 4096);
    }
    if (leaky) {
        g_leaked[0] = leak_small();
        g_leaked[1] = leak_large();
        g_leaked[2] = i % 10 == 5 ? leak_huge() : NULL;
    }
    for (int b = 0; b < k_blocks; ++b) free(g_live[b]);
    free(huge);
    return zmm_request_end();
}

int main(int argc, char** argv) {
    int leaky = argc > 1 && strcmp(argv[1], "leaky") == 0;
    int failures = 0;
    printf("loop test (%s)\n", leaky ? "leaky" : "clean");
    fflush(stdout);
    size_t rss100 = 0, real100 = 0, live100 = 0, rss_max = 0;
    for (int i = 0; i < k_requests; ++i) {
        long leaked = one_request(i, leaky);
        long want = leaky ? (g_leaked[2] ? 3 : 2) : 0;
        if (leaked != want) {
            printf("FAIL request %d: zmm_request_end returned %ld, expected %ld\n", i, leaked, want);
            if (++failures > 10) return 1;
        }
        for (int k = 0; k < 3; ++k) { /* the leaks, now persistent */
            free(g_leaked[k]);
            g_leaked[k] = NULL;
        }
        if (i + 1 == k_warm) {
            rss100 = rss_bytes();
            real100 = zmm_memory_usage(1);
            live100 = zmm_memory_usage(0); /* after the first begin's set-up (the unwinder) */
        }
        if (i >= k_warm && i % 100 == 99) {
            size_t rss = rss_bytes();
            if (rss > rss_max) rss_max = rss;
            if (zmm_memory_usage(1) > real100 + 64 * MIB) { /* already far past the bound: stop here */
                printf("FAIL OS memory grew from %zu KiB after %d requests to %zu KiB after %d\n", real100 >> 10,
                       (int)k_warm, zmm_memory_usage(1) >> 10, i + 1);
                return 1;
            }
        }
    }
    size_t rss_end = rss_bytes(), real_end = zmm_memory_usage(1);
    size_t live_end = zmm_memory_usage(0);
    printf("rss after %d: %zu KiB, after %d: %zu KiB, max %zu KiB; real %zu -> %zu KiB; live %zu -> %zu B\n",
           (int)k_warm, rss100 >> 10, k_requests, rss_end >> 10, rss_max >> 10, real100 >> 10, real_end >> 10, live100,
           live_end);
    /* Bounds: slack for the chunk cache's average and for freed pages kept
     * resident between purges (ZMM_PURGE_BUDGET), no more: growth of even
     * 4 KiB per request over the second half would exceed them. */
    if (rss100 == 0 || rss_end > rss100 + 16 * MIB || rss_max > rss100 + 40 * MIB) {
        printf("FAIL RSS grew: %zu KiB after %d requests, %zu KiB after %d (max %zu KiB)\n", rss100 >> 10,
               (int)k_warm, rss_end >> 10, k_requests, rss_max >> 10);
        ++failures;
    }
    if (real_end > real100 + 16 * MIB) {
        printf("FAIL OS memory grew: %zu KiB after %d requests, %zu KiB after %d\n", real100 >> 10, (int)k_warm,
               real_end >> 10, k_requests);
        ++failures;
    }
    if (live_end != live100) {
        printf("FAIL live bytes %zu after %d requests, %zu after %d\n", live100, (int)k_warm, live_end, k_requests);
        ++failures;
    }
    printf(failures ? "FAIL\n" : "ok\n");
    return failures ? 1 : 0;
}
