// A block of the main thread's (alive, waiting) misused by another thread:
// MODE=double frees it twice, with other frees in between (the first free
// leaves it in the freeing thread's outbox chain); MODE=interior frees a
// pointer inside it. The cross-thread free path diagnoses both.
// MODE=double_large and MODE=double_huge: another thread frees a large (or
// huge) block of main's, which waits on main's remote stack; main frees it
// again, and its own free path diagnoses it (it freed the pages, and the
// drain freed them once more, whoever held them by then). MODE=realloc_small,
// realloc_large, realloc_huge: main reallocs it instead (in place, or moved:
// a realloc is a free of the old block).
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

static void* free_block(void* arg) {
    free(arg);
    return NULL;
}

int main(void) {
    const char* mode = getenv("MODE");
    if (mode && (strncmp(mode, "double_", 7) == 0 || strncmp(mode, "realloc_", 8) == 0)) {
        const char* kind = strchr(mode, '_') + 1;
        size_t size = strcmp(kind, "small") == 0 ? 100 : strcmp(kind, "large") == 0 ? 8192 : (4 << 20);
        char* block = malloc(size);
        memset(block, 1, size < 8192 ? size : 8192);
        printf("%p\n", (void*)block);
        fflush(stdout);
        pthread_t t;
        if (pthread_create(&t, NULL, free_block, block) != 0) return 2;
        pthread_join(t, NULL);
        if (mode[0] == 'd') {
            free(block);
        } else {
            char* again = realloc(block, size + 8);
            printf("realloc returned %p\n", (void*)again);
        }
        return 0;
    }
    block = malloc(100);
    for (int i = 0; i < 8; ++i) others[i] = malloc(100);
    pthread_t t;
    if (!mode || pthread_create(&t, NULL, misuse, (void*)mode) != 0) return 2;
    pthread_join(t, NULL);
    return 0;
}
