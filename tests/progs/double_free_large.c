// A large run (page run inside a chunk) freed twice.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* keep = malloc(10000);
    char* p = malloc(100000);
    printf("%p\n", (void*)p);  // before the frees: stdio's buffer could reuse p
    fflush(stdout);
    free(p);
    free(p);
    free(keep);
    return 0;
}
