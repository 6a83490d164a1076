// Blocks from glibc's own malloc (as a library bound to glibc would have)
// are handed back to glibc by zmm's free/realloc/malloc_usable_size: from the
// main arena, from mmap, and from a thread's arena.
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void* (*malloc_fn)(size_t);
static malloc_fn glibc_malloc;

static void* in_thread(void* arg) {
    (void)arg;
    return glibc_malloc(200);  // a non-main arena
}

int main(void) {
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) return 2;
    glibc_malloc = (malloc_fn)dlsym(libc, "malloc");  // libc's own, not the preloaded one
    if (!glibc_malloc || glibc_malloc == malloc) {
        fprintf(stderr, "could not reach glibc's malloc\n");
        return 2;
    }
    char* small = glibc_malloc(100);
    char* mapped = glibc_malloc(1 << 20);
    pthread_t t;
    void* arena_block;
    pthread_create(&t, NULL, in_thread, NULL);
    pthread_join(t, &arena_block);
    memset(small, 1, 100);
    memset(mapped, 2, 1 << 20);
    memset(arena_block, 3, 200);
    if (malloc_usable_size(small) < 100 || malloc_usable_size(mapped) < (1 << 20) ||
        malloc_usable_size(arena_block) < 200) {
        fprintf(stderr, "wrong usable sizes\n");
        return 1;
    }
    small = realloc(small, 5000);  // glibc's realloc keeps it glibc's
    if (!small || small[99] != 1) return 1;
    free(small);
    free(mapped);
    free(arena_block);
    puts("ok");
    return 0;
}
