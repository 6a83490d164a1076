/* A thread that begins by freeing the blocks a dead thread left takes that
 * thread's heap (control/thread_heap.cpp, take_heap_of): the blocks it then
 * allocates reuse the memory it just freed, where another heap would grow
 * beside it while the dead thread's waits in the pool.
 *
 * Two threads leave blocks and exit, A then B: B's heap is pooled last, the
 * one a new thread is given at its start. The heir frees A's blocks, then
 * allocates as many of the same sizes: on zmm most of them land on the
 * addresses of A's. A thread that allocates before it frees keeps the heap
 * it was given, and so does one that ran a request (zmm_request_begin/end):
 * its request heap lives in its own heap, which must not go to the pool.
 * Those two allocate on B's addresses, none of A's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "on_zmm.h"

enum { BLOCKS = 3000 };

typedef struct {
    void* p[BLOCKS];
    size_t n[BLOCKS];
} Left;

static Left g_a, g_b, g_heir;

static size_t size_of(int i) { return 16 + (size_t)(i * 37) % 1000; }

/* A and B hold a heap each at once; A leaves first, then B. */
static pthread_barrier_t g_both_up;
static pthread_mutex_t g_order = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_a_gone = PTHREAD_COND_INITIALIZER;
static int g_a_left;

static void* leave(void* arg) {
    Left* l = arg;
    for (int i = 0; i < BLOCKS; ++i) {
        l->n[i] = size_of(i);
        l->p[i] = malloc(l->n[i]);
        if (!l->p[i]) abort();
        memset(l->p[i], i & 0xff, l->n[i]);
    }
    pthread_barrier_wait(&g_both_up);
    if (l == &g_b) {
        pthread_mutex_lock(&g_order);
        while (!g_a_left) pthread_cond_wait(&g_a_gone, &g_order);
        pthread_mutex_unlock(&g_order);
    }
    return NULL;
}

static int compare(const void* a, const void* b) {
    const char* x = *(const char* const*)a;
    const char* y = *(const char* const*)b;
    return x < y ? -1 : x > y;
}

/* How many of `mine` are among `theirs` (addresses). */
static int reused(void* const* mine, void* const* theirs) {
    static void* sorted[BLOCKS];
    memcpy(sorted, theirs, sizeof sorted);
    qsort(sorted, BLOCKS, sizeof sorted[0], compare);
    int n = 0;
    for (int i = 0; i < BLOCKS; ++i)
        if (bsearch(&mine[i], sorted, BLOCKS, sizeof sorted[0], compare)) ++n;
    return n;
}

static void* const* g_freed;  /* the heir frees these first */
static int g_allocate_first, g_request_first;
static int (*g_request_begin)(const char*);
static long (*g_request_end)(void);
static void* volatile g_kept;

static void* heir(void* arg) {
    (void)arg;
    void* early = g_allocate_first ? malloc(32) : NULL;
    if (g_request_first && g_request_begin) {
        /* Its block freed after the end (a free inside would end the tries
         * there), reachable from a global meanwhile (no leak report). */
        g_request_begin("heir");
        g_kept = malloc(100);
        g_request_end();
        free(g_kept);
    }
    for (int i = 0; i < BLOCKS; ++i) {
        const unsigned char* b = g_freed[i];
        if (b[0] != (unsigned char)(i & 0xff)) {
            fprintf(stderr, "heir_takes_heap: FAIL: block %d overwritten\n", i);
            exit(1);
        }
        free(g_freed[i]);
    }
    for (int i = 0; i < BLOCKS; ++i) {
        g_heir.n[i] = size_of(i);
        g_heir.p[i] = malloc(g_heir.n[i]);
        if (!g_heir.p[i]) abort();
    }
    free(early);
    return NULL;
}

static void fail_pthread(void) {
    fprintf(stderr, "heir_takes_heap: FAIL: pthread\n");
    exit(1);
}

static void run(void* (*fn)(void*), void* arg) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0 || pthread_join(t, NULL) != 0) fail_pthread();
}

/* A and B leave their blocks, A's heap pooled first. */
static void leave_two(void) {
    pthread_t a, b;
    g_a_left = 0;
    if (pthread_barrier_init(&g_both_up, NULL, 2) != 0) fail_pthread();
    if (pthread_create(&a, NULL, leave, &g_a) != 0 || pthread_create(&b, NULL, leave, &g_b) != 0) fail_pthread();
    if (pthread_join(a, NULL) != 0) fail_pthread();
    pthread_mutex_lock(&g_order);
    g_a_left = 1;
    pthread_cond_signal(&g_a_gone);
    pthread_mutex_unlock(&g_order);
    if (pthread_join(b, NULL) != 0) fail_pthread();
    pthread_barrier_destroy(&g_both_up);
}

/* One heir after A and B left: does it take A's heap (most of its blocks
 * on A's addresses) or keep the one it was given (hardly any)? */
static int scenario(int zmm, const char* what, int allocate_first, int request_first, int takes) {
    leave_two();
    g_freed = g_a.p;
    g_allocate_first = allocate_first;
    g_request_first = request_first;
    run(heir, NULL);
    const int from_a = reused(g_heir.p, g_a.p);
    printf("heir_takes_heap: %s: %d of the heir's %d blocks on A's addresses\n", what, from_a, BLOCKS);
    if (zmm && (takes ? from_a < BLOCKS / 2 : from_a > BLOCKS / 10)) {
        fprintf(stderr, "heir_takes_heap: FAIL: %s: the heir %s A's heap (%d of %d reused)\n", what,
                takes ? "did not take" : "took", from_a, BLOCKS);
        return 1;
    }
    for (int i = 0; i < BLOCKS; ++i) {
        free(g_heir.p[i]);
        free(g_b.p[i]);
    }
    return 0;
}

int main(void) {
    int zmm = on_zmm_check("heir_takes_heap", "malloc", (const void*)&malloc);
    g_request_begin = (int (*)(const char*))dlsym(RTLD_DEFAULT, "zmm_request_begin");
    g_request_end = (long (*)(void))dlsym(RTLD_DEFAULT, "zmm_request_end");
    if (zmm && (!g_request_begin || !g_request_end)) {
        fprintf(stderr, "heir_takes_heap: FAIL: no zmm_request_begin/end\n");
        return 1;
    }
    if (scenario(zmm, "freeing first", 0, 0, 1)) return 1;
    /* B's frees are remote: its blocks come from the heap it was given. */
    if (scenario(zmm, "allocating first", 1, 0, 0)) return 1;
    if (g_request_begin) {  /* what a first request loads, loaded (its allocations are the main thread's) */
        g_request_begin("warm");
        g_request_end();
    }
    if (scenario(zmm, "after a request", 0, 1, 0)) return 1;
    printf("heir_takes_heap: ok\n");
    return 0;
}
