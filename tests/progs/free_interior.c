// free() of a pointer inside a live block: a small one (default), or a
// page run, in its first page (MODE=large) or past it (MODE=large_tail).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const char* mode = getenv("MODE");
    size_t size = 100, offset = 16;
    if (mode && strcmp(mode, "large") == 0) size = 65536;  // (16 bytes in: was "unknown pointer")
    if (mode && strcmp(mode, "large_tail") == 0) size = 65536, offset = 8192 + 16;
    char* p = malloc(size);
    printf("%p\n", (void*)(p + offset));
    fflush(stdout);
    free(p + offset);
    return 0;
}
