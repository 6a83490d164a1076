// free() of a pointer inside a live small block.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* p = malloc(100);
    printf("%p\n", (void*)(p + 16));
    fflush(stdout);
    free(p + 16);
    return 0;
}
