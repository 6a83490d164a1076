// ZMM_ALLOC=0: every call goes to glibc's allocator. Small blocks then come
// from glibc's main arena (inside the program break), not from a 2 MiB chunk,
// and mallinfo2 is glibc's.
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    char* before = sbrk(0);
    void* blocks[100];
    for (int i = 0; i < 100; ++i) blocks[i] = malloc(100);
    char* after = sbrk(0);
    int in_break = 0;
    for (int i = 0; i < 100; ++i)
        if ((char*)blocks[i] < after && (uintptr_t)blocks[i] % (2u << 20) != 0) ++in_break;
    struct mallinfo2 mi = mallinfo2();
    for (int i = 0; i < 100; ++i) free(blocks[i]);
    void* big = realloc(NULL, 1 << 20);
    free(big);
    if (in_break != 100 || mi.uordblks < 100 * 100) {
        fprintf(stderr, "not glibc: %d of 100 blocks in the break (%p..%p), uordblks %zu\n", in_break,
                (void*)before, (void*)after, mi.uordblks);
        return 1;
    }
    puts("ok");
    return 0;
}
