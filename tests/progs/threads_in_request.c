// Threads created and joined inside a request leave glibc's bookkeeping
// behind (the TLS vector kept with the cached stack): not the program's
// leak, with or without backtraces. Nothing may be reported.
#include <zmm/zmm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void* work(void* arg) {
    free(malloc(100));
    return arg;
}

int main(void) {
    puts("start");  // stdout's buffer: before any request
    fflush(stdout);
    for (int k = 0; k < 3; ++k) {
        if (zmm_request_begin("threads") <= 0) return 2;
        pthread_t t[4];
        for (int i = 0; i < 4; ++i) pthread_create(&t[i], NULL, work, NULL);
        for (int i = 0; i < 4; ++i) pthread_join(t[i], NULL);
        long leaks = zmm_request_end();
        if (leaks != 0) {
            printf("request %d: %ld leaks\n", k, leaks);
            return 1;
        }
    }
    return 0;
}
