// ZMM_DEBUG=1: a write into a block after it was freed is caught when the
// block is handed out again.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* volatile p = malloc(200);
    printf("%p\n", (void*)p);
    fflush(stdout);
    free(p);
    p[50] = 'x';  // the program still uses its old pointer
    void* q = malloc(200);  // gets the same slot back: its poison is checked
    return q == NULL;
}
