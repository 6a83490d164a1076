/* Regression test for a zmm bug (found by helper-55's review of 5a4e53d):
 *
 * zmm's chunk registry kept the first 2 MiB granule of a freed huge block
 * marked for good, to diagnose a second free, also once the block's mapping
 * was unmapped. A block glibc mapped there afterwards (a RTLD_DEEPBIND
 * library's malloc; here glibc's malloc itself, through dlsym) was taken for
 * zmm's: free() aborted with "zmm: free of unknown pointer", realloc() too.
 * The kernel maps glibc's block into the hole the huge block left.
 *
 * glibc: free and realloc of its own block work. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "on_zmm.h"

typedef void* (*malloc_fn)(size_t);
static void* (*volatile v_realloc)(void*, size_t) = realloc;

/* argv[1]: "free" or "realloc", each a process of its own (the first glibc
 * block of a process lands in the hole; a second one may not). */
int main(int argc, char** argv) {
    on_zmm_check("repro_glibc_block_in_huge_granule", "malloc", (const void*)&malloc);
    const int use_realloc = argc > 1 && strcmp(argv[1], "realloc") == 0;
    void* libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    malloc_fn glibc_malloc = libc ? (malloc_fn)dlsym(libc, "malloc") : NULL;
    if (!glibc_malloc) {
        fprintf(stderr, "repro_glibc_block_in_huge_granule: FAIL: no glibc malloc (%s)\n", dlerror());
        return 1;
    }
    const size_t n = 20u << 20; /* over zmm's 16 MiB budget of cached memory: unmapped when freed */
    char* p = malloc(n);
    if (!p) return 1;
    memset(p, 1, 4096);
    free(p);
    char* q = glibc_malloc(n - (64u << 10));
    if (!q) return 1;
    const int same = ((uintptr_t)q >> 21) == ((uintptr_t)p >> 21);
    memset(q, 'q', 1000);
    if (!use_realloc) {
        free(q); /* aborted */
    } else {
        char* r = v_realloc(q, n); /* aborted */
        if (!r || r[0] != 'q' || r[999] != 'q') {
            fprintf(stderr, "repro_glibc_block_in_huge_granule: FAIL: realloc of glibc's block %p: %p\n", (void*)q,
                    (void*)r);
            return 1;
        }
        free(r);
    }
    /* The placement is the kernel's: say when it did not reproduce. */
    printf("repro_glibc_block_in_huge_granule: ok (%s; glibc's block %s the freed huge block's granule)\n",
           use_realloc ? "realloc" : "free", same ? "in" : "NOT in");
    return 0;
}
