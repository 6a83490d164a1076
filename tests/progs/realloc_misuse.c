// realloc of a small block the program no longer owns, on its own thread,
// where realloc's fast path looks first: MODE=freed reallocs a block freed
// already (to a bigger bin: the fast path would move it), MODE=interior a
// pointer inside a live block (to the same bin: it would stay in place),
// MODE=freed_same a freed block to its own bin. The fast path declines each
// and the slow path diagnoses it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void* (*volatile v_realloc)(void*, size_t) = realloc;

int main(void) {
    const char* mode = getenv("MODE");
    if (!mode) mode = "freed";
    char* p = malloc(40);
    char* others[8];
    for (int i = 0; i < 8; ++i) others[i] = malloc(200);
    for (int i = 0; i < 8; ++i) free(others[i]);  // the 200-byte bin has free slots
    void* q;
    if (strcmp(mode, "interior") == 0) {
        printf("%p\n", (void*)(p + 16));
        fflush(stdout);
        q = v_realloc(p + 16, 40);
    } else {
        free(p);
        printf("%p\n", (void*)p);
        fflush(stdout);
        q = v_realloc(p, strcmp(mode, "freed_same") == 0 ? 40 : 200);
    }
    printf("survived: %p\n", q);
    return 0;
}
