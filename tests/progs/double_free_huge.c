// A huge block (its own mapping) freed twice.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* p = malloc(8 << 20);
    p[0] = 1;
    free(p);
    printf("%p\n", (void*)p);
    fflush(stdout);
    free(p);
    return 0;
}
