/* Reproduction: a request that leaks one small block, which the program
 * frees after the request ended, costs the process a 2 MiB chunk for good
 * (tests/requests, driven by check.py; found by the loop_leaky test).
 *
 * At the end of a request (ZMM_RECLAIM=0) the chunk that holds the leaked
 * block moves into the thread's persistent heap. When the block is freed
 * there, its bin run is all free slots, but the persistent heap never
 * collects the run, so the chunk never becomes empty: it is neither cached
 * nor unmapped, and the next request maps a new chunk. 200 such requests
 * hold 400 MiB of address space (zmm_memory_usage(1) and VmSize agree), with
 * one live block of 200 bytes at most at any time. Expected: the OS memory
 * stays bounded (a few chunks), as it does when the block is freed inside
 * the request. Prints "FAIL ..." or "ok". */
#include <zmm/zmm.h>

#include <stdio.h>
#include <stdlib.h>

#define MIB ((size_t)1 << 20)

int main(void) {
    printf("leak freed later\n");
    fflush(stdout);
    size_t real_after_first = 0;
    for (int i = 0; i < 200; ++i) {
        zmm_request_begin("r");
        void* b = malloc(200); /* leaked by the request ... */
        zmm_request_end();
        free(b); /* ... and freed right after its end */
        if (i == 99) real_after_first = zmm_memory_usage(1); /* caches warm */
    }
    size_t real = zmm_memory_usage(1);
    printf("OS memory after 100 requests: %zu KiB, after 200: %zu KiB\n", real_after_first >> 10, real >> 10);
    if (real > real_after_first + 8 * MIB) {
        printf("FAIL the process's OS memory grew by %zu MiB\n", (real - real_after_first) / MIB);
        return 1;
    }
    printf("ok\n");
    return 0;
}
