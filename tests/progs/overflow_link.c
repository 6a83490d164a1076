// A buffer overflow writes over the free-list link of the next (free) slot;
// zmm notices before it follows the link.
//   (default)          'A's over the link; the next mallocs take the slot
//   MODE=zero_trim     zeros over the link (a memset or a string's end
//                      running over): malloc_trim walks the list
//   MODE=zero_thread   the same in a thread that then exits; the main thread
//                      only allocates, and the idle heap's trim walks it
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int overflow(char fill) {
    char* a = malloc(64);
    char* b = malloc(64);
    if (b != a + 64) return 2;  // consecutive slots of a fresh run
    free(b);
    printf("%p\n", (void*)b);
    fflush(stdout);
    memset(a, fill, 64 + 16);  // 16 bytes too many: b's link and shadow
    return 0;
}

static void* worker(void* arg) {
    (void)arg;
    overflow(0);
    return NULL;
}

int main(void) {
    const char* mode = getenv("MODE");
    if (mode && strcmp(mode, "zero_trim") == 0) {
        if (overflow(0)) return 2;
        malloc_trim(0);  // walks the free lists (wholly free runs go back)
        return 0;
    }
    if (mode && strcmp(mode, "zero_thread") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) return 2;
        pthread_join(t, NULL);
        usleep(150 * 1000);  // the exited thread's heap is idle in the pool
        for (int i = 0; i < 100000; ++i) free(malloc(64 + i % 4000));
        return 0;
    }
    if (overflow('A')) return 2;
    char* c = malloc(64);  // takes b: its link is checked first
    char* d = malloc(64);  // would follow the overwritten link
    return c == d;
}
