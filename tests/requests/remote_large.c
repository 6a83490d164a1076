/* Two threads, each in requests of its own, replace random slots of a
 * shared table with new blocks and free the old ones: every free is of the
 * other thread's block, often of a request of the other's that is ending.
 * The program leaks nothing: each request's end must report no lost block.
 * A page run (or huge block) another thread freed after the end's drain
 * and before its scan waits on the heap's remote stack with a link in its
 * first words, as a small slot does: it is free, not lost (it was reported
 * lost: dozens a run for 20 KB and 64 KiB blocks).
 *   remote_large SIZE [SLOTS]   (prints the leaks zmm_request_end counted; exit 1 if any)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "zmm/zmm.h"

#define MAX_SLOTS 4000
static _Atomic(void*) g_table[MAX_SLOTS];
static size_t g_size;
static int g_slots = MAX_SLOTS;
static atomic_long g_leaks;

static void* worker(void* arg) {
    unsigned seed = (unsigned)(long)arg + 1;
    for (int r = 0; r < 30; ++r) {
        if (zmm_request_begin(arg ? "B" : "A") <= 0) exit(2);
        for (int i = 0; i < g_slots; ++i) {
            int k = rand_r(&seed) % g_slots;
            free(atomic_exchange(&g_table[k], malloc(g_size)));
        }
        g_leaks += zmm_request_end();
    }
    return NULL;
}

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    g_size = strtoul(argv[1], NULL, 0);
    if (argc > 2) g_slots = atoi(argv[2]);
    if (g_slots < 1 || g_slots > MAX_SLOTS) return 2;
    pthread_t t[2];
    for (long i = 0; i < 2; ++i)
        if (pthread_create(&t[i], NULL, worker, (void*)i) != 0) return 2;
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    for (int i = 0; i < g_slots; ++i) free(atomic_load(&g_table[i]));
    printf("size %zu: %ld lost\n", g_size, (long)g_leaks);
    return g_leaks ? 1 : 0;
}
