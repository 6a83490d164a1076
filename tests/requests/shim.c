/* zmm.h's shim, in a program built as PIE and as a position-dependent
 * executable (-no-pie, where the linker sets the weak references to 0 and
 * the shim finds the functions with dlsym). Argument "on": run under the
 * preload, the calls reach zmm (a request with one leak); "off": run
 * without it, they do nothing and say so (-1, 0). Prints "ok" at the end. */
#include <zmm/zmm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selfcheck.h"

void* volatile g_sink;

static void no_handler(size_t limit, size_t requested, void* arg) {
    (void)limit, (void)requested, (void)arg;
}

int main(int argc, char** argv) {
    const int on = argc > 1 && strcmp(argv[1], "on") == 0;
    printf("shim test\n");  /* stdout's buffer: before any request */
    fflush(stdout);
    CHECK(zmm_active() == on);
    for (int twice = 0; twice < 2; ++twice) {  /* (the second time from the shim's cache) */
        int id = zmm_request_begin("shim");
        CHECK(on ? id > 0 : id == -1);
        CHECK(on ? zmm_set_memory_limit((size_t)64 << 20) == 0 : zmm_set_memory_limit((size_t)64 << 20) == -1);
        zmm_set_limit_handler(no_handler, NULL);
        g_sink = malloc(40);
        CHECK(on ? zmm_memory_usage(0) >= 40 : zmm_memory_usage(0) == 0);
        CHECK(on ? zmm_memory_peak_usage(0) >= 40 : zmm_memory_peak_usage(0) == 0);
        g_sink = NULL;
        CHECK(zmm_request_end() == (on ? 1 : -1));
    }
    printf(g_failures ? "failed\n" : "ok\n");
    return g_failures != 0;
}
