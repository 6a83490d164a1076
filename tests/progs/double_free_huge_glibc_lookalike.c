// A huge block freed twice, its mapping gone, and a page mapped since just
// below its start whose last words look like the header of an mmapped glibc
// chunk reaching down over one of zmm's chunks. glibc's aligned blocks land
// at such a start (78020c6 hands them to glibc), but this one must stay a
// double free: handed to glibc's free, it unmapped zmm's chunk (helper-58).
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

int main(void) {
    char* p = malloc(20 << 20);  // over zmm's cache budget: unmapped when freed
    char* q = malloc(1800000);   // a page run of a chunk of zmm's
    if (!p || !q) return 1;
    p[0] = 1;
    q[0] = 1;
    free(p);
    malloc_trim(0);
    const uintptr_t chunk = (uintptr_t)q & ~(uintptr_t)((2 << 20) - 1);
    char* page = mmap(p - 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (page == p - 4096 && chunk < (uintptr_t)p) {
        size_t* w = (size_t*)p;
        w[-2] = (uintptr_t)p - 16 - chunk;  // prev_size: the "mapping" starts at zmm's chunk
        w[-1] = 0x1010 | 2;                 // size, IS_MMAPPED
    }
    printf("%p\n", (void*)p);
    fflush(stdout);
    free(p);
    return 0;
}
