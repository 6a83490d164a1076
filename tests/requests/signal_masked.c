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
#include <unistd.h>

static atomic_int g_phase;
static void* volatile g_sink;

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0) {
    }
}

static void toggle(int value) {
    union sigval v;
    v.sival_int = value;
    if (sigqueue(getpid(), SIGUSR2, v) != 0) exit(2);
    pause_ms(100);  // the reporter thread acts
}

static int reports(const char* log) {
    int fd = open(log, O_RDONLY);
    if (fd < 0) return 0;
    char buf[4096];
    int lines = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
    close(fd);
    return lines;
}

static void wait_for(const char* log, int count) {
    for (int i = 0; i < 500 && reports(log) < count; ++i) pause_ms(10);
    if (reports(log) < count) {
        fprintf(stderr, "FAIL: report %d never came\n", count);
        exit(1);
    }
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

int main(int argc, char** argv) {
    const char* log = getenv("ZMM_LOG");
    if (!log) return 2;
    if (argc > 1 && strcmp(argv[1], "exit") == 0) {
        /* The request ends and the program exits at once: the report the
         * reporter thread has begun (or not yet) must come out whole. */
        union sigval v;
        v.sival_int = 1;
        if (sigqueue(getpid(), SIGUSR2, v) != 0) return 2;
        pause_ms(100);
        leak_before_exit();
        v.sival_int = 2;
        if (sigqueue(getpid(), SIGUSR2, v) != 0) return 2;
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
    atomic_store(&g_phase, 4);
    wait_phase(5);
    pthread_join(t, NULL);
    wait_for(log, 2);
    puts("ok");
    return 0;
}
