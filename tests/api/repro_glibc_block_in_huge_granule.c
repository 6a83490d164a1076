/* Regression test for a zmm bug (found by helper-55's review of 5a4e53d):
 *
 * zmm's chunk registry kept the first 2 MiB granule of a freed huge block
 * marked for good, to diagnose a second free, also once the block's mapping
 * was unmapped. A block glibc mapped there afterwards (a RTLD_DEEPBIND
 * library's malloc; here glibc's malloc itself, through dlsym) was taken for
 * zmm's: free() aborted with "zmm: free of unknown pointer", realloc() too.
 * The kernel maps glibc's block into the hole the huge block left.
 *
 * Its start stayed zmm's (a second free of it is a double free), and an
 * aligned block of glibc's lands exactly there (found by helper-57): glibc's
 * posix_memalign(4096, ...) maps the hole from 4 KiB below the granule, its
 * chunk header in that page. free() and realloc() of it aborted with "zmm:
 * double free" (argv[1] "aligned_free", "aligned_realloc").
 *
 * glibc: free and realloc of its own block work. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "on_zmm.h"

typedef void* (*malloc_fn)(size_t);
typedef int (*posix_memalign_fn)(void**, size_t, size_t);
static void* (*volatile v_realloc)(void*, size_t) = realloc;

/* argv[1]: "free", "realloc", "aligned_free" or "aligned_realloc", each a
 * process of its own (the first glibc block of a process lands in the hole;
 * a second one may not). */
int main(int argc, char** argv) {
    on_zmm_check("repro_glibc_block_in_huge_granule", "malloc", (const void*)&malloc);
    const char* mode = argc > 1 ? argv[1] : "free";
    const int use_realloc = strstr(mode, "realloc") != NULL;
    const int aligned = strncmp(mode, "aligned", 7) == 0;
    void* libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    malloc_fn glibc_malloc = libc ? (malloc_fn)dlsym(libc, "malloc") : NULL;
    posix_memalign_fn glibc_memalign = libc ? (posix_memalign_fn)dlsym(libc, "posix_memalign") : NULL;
    if (!glibc_malloc || !glibc_memalign) {
        fprintf(stderr, "repro_glibc_block_in_huge_granule: FAIL: no glibc malloc (%s)\n", dlerror());
        return 1;
    }
    /* Over zmm's 16 MiB budget of cached memory: unmapped when freed (and
     * malloc_trim gives back the cached one of the aligned case). */
    const size_t n = aligned ? 4u << 20 : 20u << 20;
    char* p = malloc(n);
    if (!p) return 1;
    memset(p, 1, 4096);
    free(p);
    char* q = NULL;
    if (aligned) {
        malloc_trim(0);
        if (glibc_memalign((void**)&q, 4096, n - 4160) != 0) return 1;
    } else {
        q = glibc_malloc(n - (64u << 10));
    }
    if (!q) return 1;
    const int same = aligned ? q == p : ((uintptr_t)q >> 21) == ((uintptr_t)p >> 21);
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
    printf("repro_glibc_block_in_huge_granule: ok (%s; glibc's block %s the freed huge block's %s)\n", mode,
           same ? (aligned ? "at" : "in") : (aligned ? "NOT at" : "NOT in"), aligned ? "start" : "granule");
    return 0;
}
