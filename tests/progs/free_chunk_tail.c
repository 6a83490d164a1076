// free() of a pointer in the last 8 bytes of a chunk of zmm's (whatever lies
// after the chunk, mapped or not): diagnosed as unknown, never read past the
// chunk's end (ZMM_DEBUG's checks once read the 16 bytes a free slot's link
// takes there before asking whether it was a block at all).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* block = malloc(100);
    uintptr_t chunk = (uintptr_t)block & ~(uintptr_t)((2u << 20) - 1);
    char* bad = (char*)(chunk + (2u << 20) - 8);
    printf("%p\n", (void*)bad);
    fflush(stdout);
    free(bad);
    return 0;
}
