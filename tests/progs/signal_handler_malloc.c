// A SIGALRM handler that allocates and frees, every 20 µs, while the thread
// allocates and frees blocks of every kind, in and out of traced requests,
// and with its very first allocation inside zmm_request_begin (which loads
// libunwind); then 200 threads in turn, each setting up its heap. POSIX leaves malloc in a handler undefined and glibc can
// corrupt its heap or deadlock here; zmm must neither deadlock nor crash
// (README, "allocating in a signal handler": what holds and what does not).
#include <zmm/zmm.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static volatile long g_handled;

// Balanced: the handler keeps nothing. Mostly small blocks (the fast path,
// and the slow path when a bin runs empty), sometimes a page run, a huge
// block, calloc, realloc growth and an aligned block: each of these lands, now
// and then, inside the interrupted thread's own slow path.
static void on_alarm(int sig) {
    (void)sig;
    long n = g_handled;
    size_t size = 32 + (size_t)(n & 255);
    if (n % 16 == 5) size = 20000;
    if (n % 512 == 7) size = 3u << 20;
    void* p = (n & 1) ? calloc(1, size) : malloc(size);
    if (p) {
        memset(p, 1, 32);
        if (n % 8 == 3) {
            void* q = realloc(p, size * 3);
            if (q) p = q;
        }
        free(p);
    }
    if (n % 32 == 9) {
        void* a = NULL;
        if (posix_memalign(&a, 4096, 100) == 0) free(a);
    }
    g_handled++;
}

// A new thread's first allocation sets up its heap: a handler landing there
// must not wait for the lock its own thread holds.
static void* first_allocations(void* arg) {
    for (int i = 0; i < 100; ++i) free(malloc(16 + (size_t)i));
    return arg;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 20}, {0, 20}};
    setitimer(ITIMER_REAL, &it, NULL);
    unsigned long x = 88172645463325252ul;
    void* keep[256] = {0};
    for (int r = 0; r < 100; ++r) {
        if (!(r & 1)) zmm_request_begin("r");  // the very first: the thread's first allocation inside
        for (int i = 0; i < 10000; ++i) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            unsigned k = x & 255;
            size_t size = (x >> 8) % 100 == 0 ? (x >> 16) % 300000 : (x >> 16) % 600;
            free(keep[k]);
            keep[k] = malloc(size + 1);
        }
        for (int k = 0; k < 256; ++k) {
            free(keep[k]);
            keep[k] = NULL;
        }
        if (!(r & 1)) zmm_request_end();
    }
    for (int t = 0; t < 200; ++t) {
        pthread_t th;
        if (pthread_create(&th, NULL, first_allocations, NULL) != 0) return 2;
        pthread_join(th, NULL);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("%ld handler runs\n", g_handled);
    return 0;
}
