/* A signal handler that allocates while another thread's request ends (a
 * leak scan): the two must not wait for each other for good.
 *
 *   A  a thread whose handler allocates a huge block: the reentry heap maps
 *      it under its lock (with every signal blocked), and a mapping's
 *      unaligned first try is unmapped, which waits while a scan reads
 *      the heaps (the unmap gate);
 *   S  a thread that ends a request (ZMM_LEAKS=lost: a scan); a timer's
 *      handler on S allocates every 5 ms, so through the reentry heap,
 *      whose lock A holds.
 *
 * munmap is interposed to set the order: A's first unmap inside its
 * handler waits until S is ending its request, then 20 ms, so that A's
 * next unmap meets the closed gate. Were S's handlers to run during its
 * scan, S would wait for A's lock and A for S's gate: the alarm (20 s)
 * ends the program. The scan runs with S's signals blocked: A waits for
 * the scan's end (S waits a second for A to stop, then scans without it).
 * Prints "handler_scan ok". */
#define _GNU_SOURCE
#include <zmm/zmm.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static __thread volatile int t_in_handler;
static atomic_int g_hooked, g_s_ending;
static void* volatile g_keep;

int munmap(void* p, size_t len) {
    if (t_in_handler && !atomic_exchange(&g_hooked, 1)) {
        while (!atomic_load(&g_s_ending)) usleep(100);
        usleep(20000);
    }
    return (int)syscall(SYS_munmap, p, len);
}

static void on_usr1(int sig) {
    (void)sig;
    t_in_handler = 1;
    g_keep = malloc(3u << 20);  // huge: the reentry heap maps it, under its lock
    t_in_handler = 0;
}

static void on_timer(int sig) {
    (void)sig;
    void* volatile p = malloc(24);
    free(p);
}

static void* thread_a(void* arg) {
    free(malloc(16));
    raise(SIGUSR1);
    return arg;
}

static void* thread_s(void* arg) {
    sigset_t u;
    sigemptyset(&u);
    sigaddset(&u, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &u, NULL);
    zmm_request_begin("scan");
    void* volatile leak = malloc(64);  // lost: the end scans
    leak = NULL;
    (void)leak;
    // (At most 2 s: a first mapping that happens to be aligned unmaps
    // nothing, and the order is then not set, nor needed.)
    for (int i = 0; i < 2000 && !atomic_load(&g_hooked); ++i) usleep(1000);
    timer_t t;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGUSR2;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0) abort();
    struct itimerspec its = {{0, 5 * 1000 * 1000}, {0, 5 * 1000 * 1000}};
    timer_settime(t, 0, &its, NULL);
    atomic_store(&g_s_ending, 1);
    zmm_request_end();
    memset(&its, 0, sizeof its);
    timer_settime(t, 0, &its, NULL);
    return arg;
}

int main(void) {
    alarm(20);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_timer;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);  // S unblocks it; A and main never take it
    pthread_t a, st;
    pthread_create(&st, NULL, thread_s, NULL);
    pthread_create(&a, NULL, thread_a, NULL);
    pthread_join(a, NULL);
    pthread_join(st, NULL);
    free(g_keep);
    printf("handler_scan ok\n");
    return 0;
}
