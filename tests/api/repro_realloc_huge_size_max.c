/* Regression test for a zmm bug (found by contract_c):
 *
 * realloc(p, n) of a huge block (> 2 MiB - 4 KiB) with n in
 * (SIZE_MAX - 4095, SIZE_MAX] returns p itself, with errno untouched, after
 * unmapping all of p's pages (malloc_usable_size(p) becomes 0; the next access
 * to p is SIGSEGV). The page rounding in Heap::realloc_huge (core/heap.cpp,
 * `round_pages(bytes)`) wraps to 0, which is taken for "shrink in place to 0
 * bytes". reallocarray(p, SIZE_MAX, 1) takes the same path.
 *
 * glibc: NULL with errno ENOMEM, p unchanged and still valid. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "on_zmm.h"

static void* (*volatile v_realloc)(void*, size_t) = realloc;

int main(void) {
    on_zmm_check("repro_realloc_huge_size_max", "malloc", (const void*)&malloc);
    int failed = 0;
    size_t sizes[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4095};
    for (int i = 0; i < 3; ++i) {
        size_t old = 3u << 20;
        char* p = malloc(old);
        if (!p) return 1;
        memset(p, 'x', old);
        errno = 0;
        char* r = v_realloc(p, sizes[i]);
        int e = errno;
        if (r != NULL || e != ENOMEM) {
            fprintf(stderr,
                    "repro_realloc_huge_size_max: FAIL: realloc(%zu-byte block %p, %zu) = %p, errno %d; want NULL, "
                    "ENOMEM (malloc_usable_size(p) is now %zu)\n",
                    old, (void*)p, sizes[i], (void*)r, e, malloc_usable_size(p));
            failed = 1;
            continue;  /* p may be unmapped: do not touch it */
        }
        if (malloc_usable_size(p) < old || p[0] != 'x' || p[old - 1] != 'x') {
            fprintf(stderr, "repro_realloc_huge_size_max: FAIL: the block is damaged after a failed realloc\n");
            failed = 1;
            continue;
        }
        free(p);
    }
    if (!failed) fprintf(stderr, "repro_realloc_huge_size_max: passed\n");
    return failed;
}
