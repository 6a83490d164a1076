/* ZMM_DEBUG=1 with cross-thread frees: a producer allocates (and frees its
 * own blocks, so that its heap's table grows and shrinks all along) while a
 * consumer frees the producer's blocks. The consumer once checked and
 * poisoned those blocks from the producer's table, which only the producer
 * may touch: false "write after free" and overflow reports, or a read of an
 * array the producer had just unmapped. Now the producer checks a block as it
 * takes it back from its remote stack. Also sized deletes' claims under
 * ZMM_DEBUG (the canary after the block is not the program's). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 1024
static _Atomic(void*) g_queue[SLOTS];
static int g_count = 500000;

/* Both threads run at once (the race needs it): spin, and yield only if
 * the other one seems descheduled. */
static void wait_a_little(unsigned* spins) {
    if (++*spins % 4096 == 0)
        sched_yield();
    else
        __builtin_ia32_pause();
}

static void* producer(void* arg) {
    (void)arg;
    void* keep[256] = {0};
    for (int i = 0; i < g_count; ++i) {
        int k = i & 255;
        size_t n = 24 + (size_t)(i % 200);
        free(keep[k]);
        keep[k] = malloc(n);
        memset(keep[k], 1, n);
        void* p = malloc(40);
        memset(p, 0x11, 40);
        unsigned spins = 0;
        while (atomic_load(&g_queue[i % SLOTS])) wait_a_little(&spins);
        atomic_store(&g_queue[i % SLOTS], p);
    }
    for (int k = 0; k < 256; ++k) free(keep[k]);
    return NULL;
}

static void* consumer(void* arg) {
    (void)arg;
    for (int i = 0; i < g_count; ++i) {
        void* p;
        unsigned spins = 0;
        while (!(p = atomic_exchange(&g_queue[i % SLOTS], NULL))) wait_a_little(&spins);
        const unsigned char* b = p;
        for (int j = 0; j < 40; ++j)
            if (b[j] != 0x11) {
                fprintf(stderr, "block %p damaged at %d\n", p, j);
                exit(1);
            }
        free(p);
    }
    return NULL;
}

int main(int argc, char** argv) {
    if (argc > 1) g_count = atoi(argv[1]);
    pthread_t a, b;
    pthread_create(&a, NULL, producer, NULL);
    pthread_create(&b, NULL, consumer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    puts("ok");
    return 0;
}
