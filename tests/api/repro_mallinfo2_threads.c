/* Regression test for a zmm bug:
 *
 * mallinfo2() (and mallinfo, malloc_stats, malloc_info: all go through
 * heap_pool::total_stats, core/heap_pool.cpp) walks the free lists and chunk
 * lists of every thread's heap (Heap::stats, core/heap.cpp) while their owner
 * threads keep allocating and freeing without any lock. A slot popped by its
 * owner and overwritten by the program is then followed as a `next` link, and
 * the calling thread dies of SIGSEGV (or reads chunks being unmapped).
 *
 * glibc: mallinfo2 is MT-Safe (it locks each arena); a monitoring thread may
 * call it at any time. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "on_zmm.h"

enum { WORKERS = 3, SLOTS = 512, SECONDS = 2 };
static atomic_int g_stop;

static void* worker(void* arg) {
    uint64_t s = (uintptr_t)arg * 7919 + 1;
    void* v[SLOTS] = {0};
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t i = (s >> 33) % SLOTS;
        free(v[i]);
        size_t n = 16 + (s >> 40) % 3000;
        if ((s >> 20) % 100 == 0) n = 5000 + (s >> 40) % 500000;
        v[i] = malloc(n);
        if (!v[i]) abort();
        memset(v[i], 0xa7, n); /* the program's data over what was the free-list link */
    }
    for (int i = 0; i < SLOTS; ++i) free(v[i]);
    return NULL;
}

static int run(void) {
    pthread_t t[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; ++i)
        if (pthread_create(&t[i], NULL, worker, (void*)i) != 0) return 3;
    /* a monitoring thread's job, done flat out for a few seconds */
    size_t sum = 0;
    time_t end = time(NULL) + SECONDS;
    while (time(NULL) < end)
        for (int k = 0; k < 1000; ++k) {
            struct mallinfo2 m = mallinfo2();
            sum += m.uordblks & 1;
        }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < WORKERS; ++i) pthread_join(t[i], NULL);
    return sum == (size_t)-1; /* use the result */
}

int main(void) {
    on_zmm_check("repro_mallinfo2_threads", "mallinfo2", (const void*)&mallinfo2);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        alarm(20);
        _exit(run());
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr,
                "repro_mallinfo2_threads: FAIL: mallinfo2() called while %d threads allocate: the process %s %d%s\n",
                WORKERS, WIFSIGNALED(st) ? "died of signal" : "exited with",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV ? " (SIGSEGV)" : "");
        return 1;
    }
    fprintf(stderr, "repro_mallinfo2_threads: passed\n");
    return 0;
}
