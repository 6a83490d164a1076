/* Regression tests for zmm's outbox chains (core/heap.cpp, free_through_outbox):
 * small blocks a thread frees into another thread's heap wait in the freeing
 * thread's outbox, then travel to the owner as a chain.
 *
 * 1. A signal handler that calls malloc_trim (which sends the calling
 *    thread's outbox) while the thread it interrupted is inside free(),
 *    between adding a block to a chain and sending it: the chain was sent
 *    twice (its tail linked to its own head, blocks handed out twice) or
 *    half-reset (a null dereference). The producer checks that no block is
 *    handed out twice in a round.
 * 2. mallinfo2 and malloc_info read from a third thread while blocks travel:
 *    a block counted freed twice (in an outbox and on the owner's stack, or
 *    between the owner's taking and its counters) made "in use" wrap below
 *    zero. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "on_zmm.h"

enum { BATCH = 200, SECONDS = 2 };
static void* _Atomic g_slot[BATCH];
static atomic_int g_phase;  // 0: the producer fills, 1: the consumer frees
static atomic_int g_stop;
static atomic_long g_handled;

static void on_usr1(int sig) {
    (void)sig;
    malloc_trim(0);
    atomic_fetch_add(&g_handled, 1);
}

static int by_address(const void* a, const void* b) {
    uintptr_t x = *(const uintptr_t*)a, y = *(const uintptr_t*)b;
    return x < y ? -1 : x > y;
}

static void* producer(void* arg) {
    (void)arg;
    uintptr_t seen[BATCH];
    while (!atomic_load(&g_stop)) {
        if (atomic_load(&g_phase) != 0) continue;
        for (int i = 0; i < BATCH; ++i) {
            void* p = malloc(40);
            if (!p) abort();
            seen[i] = (uintptr_t)p;
            g_slot[i] = p;
        }
        qsort(seen, BATCH, sizeof seen[0], by_address);
        for (int i = 1; i < BATCH; ++i)
            if (seen[i] == seen[i - 1]) {
                fprintf(stderr, "FAIL: block %p handed out twice\n", (void*)seen[i]);
                abort();
            }
        atomic_store(&g_phase, 1);
    }
    return NULL;
}

static void* consumer(void* arg) {
    (void)arg;
    free(malloc(8));  // a heap of its own: its frees of the producer's blocks are remote
    while (!atomic_load(&g_stop)) {
        if (atomic_load(&g_phase) != 1) continue;
        for (int i = 0; i < BATCH; ++i) free(g_slot[i]);
        atomic_store(&g_phase, 0);
    }
    return NULL;
}

static void* reader(void* arg) {
    (void)arg;
    static char buf[1 << 16];
    long wrapped = 0;
    while (!atomic_load(&g_stop)) {
        struct mallinfo2 m = mallinfo2();
        if (m.uordblks > ((size_t)1 << 48)) ++wrapped;
        FILE* f = fmemopen(buf, sizeof buf, "w");
        if (!f) abort();
        malloc_info(0, f);
        fclose(f);
        for (char* q = strstr(buf, "count=\""); q; q = strstr(q + 1, "count=\""))
            if (strtoull(q + 7, NULL, 10) > (1ull << 40)) ++wrapped;
    }
    return (void*)wrapped;
}

int main(void) {
    on_zmm_check("repro_outbox_in_flight", "malloc", (const void*)&malloc);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t p, c, r;
    pthread_create(&p, NULL, producer, NULL);
    pthread_create(&c, NULL, consumer, NULL);
    pthread_create(&r, NULL, reader, NULL);
    time_t end = time(NULL) + SECONDS;
    while (time(NULL) < end) {
        pthread_kill(c, SIGUSR1);
        for (volatile int i = 0; i < 2000; ++i) {
        }
    }
    atomic_store(&g_stop, 1);
    void* wrapped;
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    pthread_join(r, &wrapped);
    if (wrapped) {
        fprintf(stderr, "FAIL: %ld readings of in-use figures below zero\n", (long)(intptr_t)wrapped);
        return 1;
    }
    printf("ok: %ld trims in the consumer's handler\n", atomic_load(&g_handled));
    return 0;
}
