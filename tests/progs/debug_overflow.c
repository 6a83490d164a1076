// ZMM_DEBUG=1: writing one byte past a block is caught when it is freed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char* p = malloc(100);
    printf("%p\n", (void*)p);
    fflush(stdout);
    memset(p, 'x', 101);  // one too many
    free(p);
    return 0;
}
