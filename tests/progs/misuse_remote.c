// A block of the main thread's (alive, waiting) misused by another thread:
// MODE=double frees it twice, with other frees in between (the first free
// leaves it in the freeing thread's outbox chain); MODE=interior frees a
// pointer inside it. The cross-thread free path diagnoses both.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char* block;
static char* others[8];

static void* misuse(void* arg) {
    const char* mode = arg;
    if (strcmp(mode, "double") == 0) {
        printf("%p\n", (void*)block);
        fflush(stdout);
        free(block);
        for (int i = 0; i < 8; ++i) free(others[i]);
        free(block);
    } else {
        printf("%p\n", (void*)(block + 32));
        fflush(stdout);
        free(block + 32);
    }
    return NULL;
}

int main(void) {
    const char* mode = getenv("MODE");
    block = malloc(100);
    for (int i = 0; i < 8; ++i) others[i] = malloc(100);
    pthread_t t;
    if (!mode || pthread_create(&t, NULL, misuse, (void*)mode) != 0) return 2;
    pthread_join(t, NULL);
    return 0;
}
