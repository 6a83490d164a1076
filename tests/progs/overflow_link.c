// A buffer overflow writes over the free-list link of the next (free) slot;
// zmm notices before it follows the link.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char* a = malloc(64);
    char* b = malloc(64);
    if (b != a + 64) return 2;  // consecutive slots of a fresh run
    free(b);
    printf("%p\n", (void*)b);
    fflush(stdout);
    memset(a, 'A', 64 + 16);  // 16 bytes too many: b's link and shadow
    char* c = malloc(64);     // takes b: its link is checked first
    char* d = malloc(64);     // would follow the overwritten link
    return c == d;
}
