// ZMM_DEBUG=1: a block of an abandoned heap (its thread exited) freed by a
// signal handler, then another block of that heap freed normally (the heap
// is reclaimed and drained there). The handler's free once checked and
// poisoned the block from a table no thread owned, and its drain then
// reported the poison as an overflow.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void* blocks[2];

static void* worker(void* arg) {
    (void)arg;
    blocks[0] = malloc(40);
    blocks[1] = malloc(40);
    memset(blocks[0], 1, 40);
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    free(blocks[0]);
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) return 2;
    pthread_join(t, NULL);
    signal(SIGUSR1, on_signal);
    raise(SIGUSR1);
    free(blocks[1]);
    void* more[64];
    for (int i = 0; i < 64; ++i) more[i] = malloc(40);
    for (int i = 0; i < 64; ++i) free(more[i]);
    puts("survived");
    return 0;
}
