// ZMM_DEBUG=1: writing one byte past a block is caught when it is freed.
// MODE=remote: another thread overflows the main thread's block and frees
// it; main's next allocation, as it takes the block back, reports it.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void* overflow_and_free(void* p) {
    memset(p, 'x', 101);  // one too many
    free(p);
    return NULL;
}

int main(void) {
    const char* mode = getenv("MODE");
    char* p = malloc(100);
    printf("%p\n", (void*)p);
    fflush(stdout);
    if (mode && strcmp(mode, "remote") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, overflow_and_free, p) != 0) return 2;
        pthread_join(t, NULL);
        free(malloc(100));
        puts("not reported");
        return 0;
    }
    memset(p, 'x', 101);  // one too many
    free(p);
    return 0;
}
