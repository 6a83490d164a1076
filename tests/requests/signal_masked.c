/* ZMM_REQUEST=signal, a thread that blocks every signal with a raw
 * rt_sigprocmask (which zmm does not see, and so cannot keep its own
 * signals out of), so that neither the request's switch nor the leak
 * scan's stop reaches it:
 *
 *   - it joins the request at its first slow path inside it (its large
 *     allocations are the request's: counted, and its leaks reported);
 *   - the request's report comes without its share (after the second the
 *     reporter waits for it), and its share is reported on its own, under
 *     the same request id, when its next slow path after the end ends it;
 *   - later requests' ends do not wait for it, nor queue switch signals
 *     at it;
 *   - (argument "exit") a process that exits as soon as its request ends
 *     leaves the report whole: the exit waits for one being written, or
 *     writes it.
 *
 * The program toggles the request itself (sigqueue to its own pid, as `zmm
 * request PID begin|end` does) and waits for each report in ZMM_LOG (JSON).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "signal_log.h"

static atomic_int g_phase;
static void* volatile g_sink;

// Signals queued for the process's user (SigQ), this process's the most.
static int pending_signals(void) {
    FILE* f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "SigQ: %d/", &n) == 1) break;
    fclose(f);
    return n;
}

static void wait_phase(int phase) {
    while (atomic_load(&g_phase) < phase) pause_ms(1);
}

__attribute__((noinline)) static void leak_in_masked_thread(void) {
    for (int i = 0; i < 3; ++i) {
        char* p = malloc(20000 + i * 4096);  // page runs: every one a slow path
        memset(p, i, 64);
    }
}

static void* masked(void* arg) {
    (void)arg;
    unsigned long all = ~0ul;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, sizeof all);
    free(malloc(20000));  // a heap of its own, outside the request
    atomic_store(&g_phase, 1);
    wait_phase(2);        // the request is open
    leak_in_masked_thread();
    atomic_store(&g_phase, 3);
    wait_phase(4);        // the request has ended, and its report is out
    g_sink = malloc(30000);  // the slow path ends the share: its own report
    free(g_sink);
    atomic_store(&g_phase, 5);
    return NULL;
}

__attribute__((noinline)) static void leak_before_exit(void) {
    char* p = malloc(50000);
    memset(p, 1, 64);
}

/* A request that leaks one block, its end sent and not waited for. */
static void request_with_leak(void) {
    toggle(1);
    leak_before_exit();
    send_toggle(2);
}

int main(int argc, char** argv) {
    const char* log = getenv("ZMM_LOG");
    if (!log) return 2;
    if (argc > 1 && strcmp(argv[1], "fork") == 0) {
        /* Children forked after the request's end (this thread's share
         * ended), before or while the reporter writes its report: none
         * reports the parent's request again, none waits for the parent's
         * report at its exit. */
        request_with_leak();
        free(malloc(100000));  // a slow path: this thread's share ends (if the switch has not ended it)
        struct timespec t0, t1;
        for (int i = 0; i < 40; ++i) {
            clock_gettime(CLOCK_MONOTONIC, &t0);
            pid_t child = fork();
            if (child < 0) return 2;
            if (child == 0) exit(0);  // (exit, not _exit: zmm's exit handler runs)
            int status;
            waitpid(child, &status, 0);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (t1.tv_sec - t0.tv_sec > 2) {
                fprintf(stderr, "FAIL: a child took %ld s to exit\n", (long)(t1.tv_sec - t0.tv_sec));
                return 1;
            }
        }
        wait_for(log, 1);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "exit") == 0) {
        /* The request ends and the program exits at once: the report the
         * reporter thread has begun (or not yet) must come out whole. */
        request_with_leak();
        return 0;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, masked, NULL) != 0) return 2;
    wait_phase(1);
    toggle(1);
    atomic_store(&g_phase, 2);
    wait_phase(3);
    toggle(2);
    wait_for(log, 1);
    /* Later requests while the thread idles with its share open: their
     * ends do not wait for it (each waited the whole second), and it is
     * sent one switch, not one per wait (200 a request, queued against the
     * user's limit of pending signals). */
    for (int i = 0; i < 3; ++i) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        toggle(1);
        toggle(2);
        wait_for(log, 2 + i);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (s > 0.9) {
            fprintf(stderr, "FAIL: request %d's end waited %.2f s for the masked thread\n", 2 + i, s);
            return 1;
        }
    }
    if (pending_signals() > 8) {
        fprintf(stderr, "FAIL: %d signals queued\n", pending_signals());
        return 1;
    }
    atomic_store(&g_phase, 4);
    wait_phase(5);
    pthread_join(t, NULL);
    wait_for(log, 5);
    puts("ok");
    return 0;
}
