/* Untraced requests (ZMM_BACKTRACE=0, ZMM_LEAKS=all) over pages that hold
 * blocks carried from earlier requests (tests/requests, driven by check.py).
 *
 * Each request leaks two 48-byte blocks, which zmm carries: their pages
 * free on a branch of the fast path from then on
 * (Heap::free_in_carried_page), the carried block itself through the
 * request heap's table. The request also churns 48-byte blocks (most of
 * which land in such pages by now), and frees the block kept three
 * requests ago, whose slot the next allocation takes
 * (LIFO): a block of this request at the address of a carried one, which
 * must be reported as this request's leak, not taken for the carried one.
 * Each request must report exactly its two blocks, its usage must count
 * what it holds, the process's peak must not fall when carried blocks are
 * freed outside a request, and a double free of a block in such a page must
 * still be diagnosed. Prints "FAIL ..." or "ok". */
#include <zmm/zmm.h>

#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQUESTS 300
#define CHURN 400

static void* kept_a[REQUESTS];
static void* kept_b[REQUESTS];

static int failures;
static void fail(const char* what, long got, long want) {
    if (failures++ < 10) printf("FAIL %s: %ld, expected %ld\n", what, got, want);
}

int main(void) {
    printf("carried blocks\n");
    fflush(stdout);
    void* churn[CHURN];
    for (int i = 0; i < REQUESTS; ++i) {
        if (zmm_request_begin("r") < 0) {
            printf("FAIL zmm_request_begin\n");
            return 1;
        }
        for (int k = 0; k < CHURN; ++k) {
            churn[k] = malloc(48);
            memset(churn[k], k, 48);
        }
        for (int k = 0; k < CHURN; ++k) {
            unsigned char* c = churn[(k * 7) % CHURN];
            if (c[47] != (unsigned char)((k * 7) % CHURN)) fail("churn content", c[47], (k * 7) % CHURN);
            free(c);
        }
        if (i >= 3) {
            free(kept_a[i - 3]);  /* carried from three requests ago */
            kept_a[i - 3] = NULL;
        }
        kept_a[i] = malloc(48); /* most likely the slot just freed */
        kept_b[i] = malloc(48);
        memset(kept_a[i], 0xa5, 48);
        memset(kept_b[i], 0x5a, 48);
        size_t usage = zmm_memory_usage(0);
        if (usage < 96 || usage > 96 + 4096) fail("usage in the request", (long)usage, 96);
        long leaked = zmm_request_end();
        if (leaked != 2) fail("leaks of a request", leaked, 2);
    }
    /* Everything freed, outside any request (the process's peak stays),
     * then a clean request. */
    size_t peak_before = zmm_memory_peak_usage(0);
    for (int i = 0; i < REQUESTS; ++i) {
        free(kept_a[i]);
        free(kept_b[i]);
    }
    if (zmm_memory_peak_usage(0) < peak_before)
        fail("the process's peak after freeing carried blocks", (long)zmm_memory_peak_usage(0), (long)peak_before);
    zmm_request_begin("clean");
    for (int k = 0; k < CHURN; ++k) churn[k] = malloc(48);
    for (int k = 0; k < CHURN; ++k) free(churn[k]);
    long leaked = zmm_request_end();
    if (leaked != 0) fail("leaks of the clean request", leaked, 0);

    /* A double free in a page that holds a carried block: diagnosed. */
    pid_t pid = fork();
    if (pid == 0) {
        zmm_request_begin("a");
        void* keep = malloc(48);
        zmm_request_end(); /* keep is carried: its page is marked */
        (void)keep;
        zmm_request_begin("b");
        void* p = malloc(48);
        free(p);
        free(p);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail("double free in a marked page: the child's status", status, -1);
    if (!failures) printf("ok\n");
    return failures ? 1 : 0;
}
