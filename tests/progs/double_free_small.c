// A small block freed twice, with other frees in between.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* p = malloc(40);
    char* others[8];
    for (int i = 0; i < 8; ++i) others[i] = malloc(40);
    free(p);
    for (int i = 0; i < 8; ++i) free(others[i]);
    printf("%p\n", (void*)p);
    fflush(stdout);
    free(p);
    return 0;
}
