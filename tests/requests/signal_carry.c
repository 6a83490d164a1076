/* ZMM_REQUEST=signal, ZMM_LEAKS=lost: a block that outlives its request is
 * classified again at each later request's end. The program toggles the
 * process-wide request itself (sigqueue to its own pid, as `zmm request PID
 * begin|end` does) and waits for each report in ZMM_LOG (JSON):
 *
 *   request 1  fills a cache block a global points to: still reachable
 *   request 2  drops it (the global cleared): definitely lost, reported now
 *   request 3  nothing: the block is not reported again
 *
 * It first closes every descriptor past stderr, as a daemon does.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "signal_log.h"

static void* volatile g_cache;
static volatile int g_sink;

// Work inside a request: this thread joins it at its first allocation.
static void work(void) {
    for (int i = 0; i < 100; ++i) {
        char* p = malloc(64 + i);
        p[0] = (char)i;
        g_sink += p[0];
        free(p);
    }
}

int main(void) {
    const char* log = getenv("ZMM_LOG");
    if (!log) return 2;
    /* As a daemon does: every descriptor past stderr closed. The toggle
     * still reaches zmm's reporter thread (it once waited on a pipe). */
    for (int fd = 3; fd < 1024; ++fd) close(fd);
    toggle(1);
    work();
    void* cache = calloc(1, 100);
    g_cache = cache;
    cache = NULL;
    toggle(2);
    wait_for(log, 1);

    toggle(1);
    work();
    g_cache = NULL;  // dropped: lost
    toggle(2);
    wait_for(log, 2);

    toggle(1);
    work();
    toggle(2);
    wait_for(log, 3);
    puts("ok");
    return 0;
}
