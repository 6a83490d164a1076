// Thousands of threads, each running one request and leaving: nothing
// accumulates (RSS flat once the first threads' heaps are pooled), and a
// request on the main thread afterwards is still classified by the leak
// scan (one lost block, one reachable: zmm_request_end counts the lost).
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmm/zmm.h>

static void* one_request(void* arg) {
    (void)arg;
    zmm_request_begin("thread");
    char* p = malloc(100000);
    memset(p, 1, 100000);
    free(p);
    free(malloc(10));
    zmm_request_end();
    return NULL;
}

static long rss_kib(void) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

static void churn(int n) {
    for (int i = 0; i < n; ++i) {
        pthread_t t;
        if (pthread_create(&t, NULL, one_request, NULL) != 0 || pthread_join(t, NULL) != 0) exit(2);
    }
}

void* volatile reachable;  // (volatile: a store the compiler must keep)
static volatile uintptr_t hidden;

int main(void) {
    churn(500);
    long before = rss_kib();
    churn(4500);  // past the 4096 internal mappings zmm lists
    long after = rss_kib();
    if (after - before > 2048) {
        fprintf(stdout, "FAIL: RSS grew by %ld KiB over 4500 threads\n", after - before);
        return 1;
    }
    zmm_request_begin("main");
    reachable = malloc(100);
    hidden = (uintptr_t)malloc(200) ^ ((uintptr_t)1 << 62);  // no pointer to it left
    long leaked = zmm_request_end();
    if (leaked != 1) {
        fprintf(stdout, "FAIL: %ld blocks reported lost, expected 1 (the scan did not run?)\n", leaked);
        return 1;
    }
    return 0;
}
