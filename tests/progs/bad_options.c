// Malformed ZMM_* values: one warning each, naming the variable; the program
// runs normally with the defaults.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    void* p = malloc(100);
    free(p);
    puts("ok");
    return 0;
}
