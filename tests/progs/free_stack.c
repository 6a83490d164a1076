// free() of a stack address: neither zmm's nor glibc's.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char buf[64] __attribute__((aligned(16)));
    printf("%p\n", (void*)buf);
    fflush(stdout);
    free(buf);
    return 0;
}
