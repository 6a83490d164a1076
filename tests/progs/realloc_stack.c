// realloc() of a static address: neither zmm's nor glibc's.
#include <stdio.h>
#include <stdlib.h>

static char data[64] __attribute__((aligned(16)));

int main(void) {
    printf("%p\n", (void*)data);
    fflush(stdout);
    void* q = realloc(data, 200);
    return q != NULL;
}
