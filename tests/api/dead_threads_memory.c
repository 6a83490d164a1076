/* Memory of threads that left goes back to the OS (the heap pool's trims,
 * core/heap_pool.cpp):
 *
 * 1. Blocks that dead threads left live, freed later by the main thread:
 *    their pages go back as they are freed (glibc trims a dead thread's
 *    arena the same way), not when a new thread adopts the heap.
 * 2. A burst of threads that each allocate and free a few MiB of small
 *    blocks, then leave: their heaps give their memory back once idle for
 *    100 ms, at the next purge check of a heap still in use (here the main
 *    thread's large frees, 4 heaps a check, a check every 100 ms at most)
 *    or the next thread exit.
 * 3. The same burst again, then the main thread only allocates small
 *    blocks: the runs it cuts for them check the pool too.
 *
 * Measured by the process's resident set (/proc/self/statm), against the
 * RSS before the threads started; the limits leave room for what any
 * allocator keeps (glibc: 3-5 MB in both cases). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "on_zmm.h"

enum { THREADS = 8, LEFT = 8, LEFT_SIZE = 1536 * 1024, BURST = 16, SMALL = 4000, SMALL_SIZE = 1000 };

static void* left[THREADS][LEFT];

static long rss_kib(void) {
    FILE* f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) {
        fprintf(stderr, "dead_threads_memory: FAIL: /proc/self/statm unreadable\n");
        exit(1);
    }
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void* leave_blocks(void* arg) {
    void** mine = arg;
    for (int i = 0; i < LEFT; ++i) {
        mine[i] = malloc(LEFT_SIZE);
        if (!mine[i]) abort();
        memset(mine[i], 0x5a, LEFT_SIZE);
    }
    return NULL;
}

static pthread_barrier_t g_all_up;

// Each holds its blocks until every one of the burst does: as many heaps.
static void* churn(void* arg) {
    (void)arg;
    static __thread void* blocks[SMALL];
    for (int i = 0; i < SMALL; ++i) {
        blocks[i] = malloc(SMALL_SIZE);
        if (!blocks[i]) abort();
        memset(blocks[i], 0xa5, SMALL_SIZE);
    }
    pthread_barrier_wait(&g_all_up);
    for (int i = 0; i < SMALL; ++i) free(blocks[i]);
    return NULL;
}

static void run_threads(int n, void* (*fn)(void*), int with_slots) {
    pthread_t t[BURST];
    for (int i = 0; i < n; ++i)
        if (pthread_create(&t[i], NULL, fn, with_slots ? (void*)left[i] : NULL) != 0) abort();
    for (int i = 0; i < n; ++i) pthread_join(t[i], NULL);
}

static void large_frees(void) {
    for (int i = 0; i < 10; ++i) {
        char* volatile p = malloc(100000);
        if (!p) abort();
        p[0] = 1;
        free(p);
    }
}

// Small blocks kept live: every call cuts new runs.
static void small_allocations(void) {
    static void* kept[5][100];
    static int calls;
    for (int i = 0; i < 100; ++i) {
        kept[calls % 5][i] = malloc(3000);
        if (!kept[calls % 5][i]) abort();
        memset(kept[calls % 5][i], 0x3c, 3000);
    }
    ++calls;
}

static int check(const char* what, long rss, long base, long most) {
    printf("dead_threads_memory: %s: %ld KiB resident, %ld over the start (at most %ld)\n", what, rss, rss - base, most);
    if (rss - base > most) {
        fprintf(stderr, "dead_threads_memory: FAIL: %s: %ld KiB over the start, more than %ld\n", what, rss - base, most);
        return 1;
    }
    return 0;
}

int main(void) {
    if (!on_zmm_check("dead_threads_memory", "malloc", (const void*)&malloc)) printf("(not on zmm)\n");
    int failed = 0;
    large_frees();  // the main thread's heap, warm
    const long base = rss_kib();

    run_threads(THREADS, leave_blocks, 1);
    const long live = rss_kib();
    printf("dead_threads_memory: %d threads left %d MiB live: %ld KiB resident\n", THREADS,
           THREADS * LEFT * LEFT_SIZE >> 20, live);
    for (int i = 0; i < THREADS; ++i)
        for (int j = 0; j < LEFT; ++j) free(left[i][j]);
    failed |= check("after the main thread freed them", rss_kib(), base, 16 * 1024);

    pthread_barrier_init(&g_all_up, NULL, BURST);
    run_threads(BURST, churn, 0);
    const long burst = rss_kib();
    printf("dead_threads_memory: %d threads came and went: %ld KiB resident\n", BURST, burst);
    // A purge check every 110 ms trims up to 4 idle heaps (zmm): 5 of them.
    const struct timespec wait = {0, 110 * 1000 * 1000};
    for (int k = 0; k < 5; ++k) {
        nanosleep(&wait, NULL);
        large_frees();
    }
    failed |= check("after a burst of threads, the main thread's large frees over 550 ms", rss_kib(), base, 24 * 1024);

    const long before = rss_kib();
    run_threads(BURST, churn, 0);
    printf("dead_threads_memory: %d threads came and went again: %ld KiB resident\n", BURST, rss_kib());
    for (int k = 0; k < 5; ++k) {
        nanosleep(&wait, NULL);
        small_allocations();
    }
    // (the main thread's own 1.5 MB of small blocks on top)
    failed |= check("after a second burst, the main thread's small allocations over 550 ms", rss_kib(), before, 12 * 1024);
    return failed;
}
