/* The leak scan against a running, forking, misbehaving program: each mode a
 * case that once crashed, hung or misreported (tests/requests/check.py,
 * test_scan_stress, runs them).
 *
 *   exit_churn  (ZMM_REQUEST=process) a worker maps and frees a 32 MiB
 *               block every 2 ms while main returns: the exit report's scan
 *               must not read a block freed since its share ended
 *   fork        one thread ends requests in a loop (a scan each) while main
 *               forks 100 times; each child ends a request of its own under
 *               a 5 s alarm: no child may inherit a lock held mid-scan
 *   sigqueue    a thread blocks every signal with the raw system call; 200
 *               requests end: zmm must not queue a stop signal per scan
 *               (the real-time queue is limited per user); prints how
 *               many the thread found queued
 *   emfile      the descriptor table full: the scan cannot read
 *               /proc/self/maps and says so, listing every live block
 */
#include <zmm/zmm.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int g_stop;
static void* volatile g_keep;

static void* churn(void* arg) {
    for (;;) {
        volatile char* p = malloc(32u << 20);
        p[0] = 1;
        usleep(1000);
        free((void*)p);
        usleep(1000);
    }
    return arg;
}

static void* scanner(void* arg) {
    while (!g_stop) {
        zmm_request_begin("loop");
        void* volatile p = malloc(64);
        (void)p;
        zmm_request_end();
    }
    return arg;
}

static volatile int g_queued = -1;

/* Blocks every signal, then counts the real-time signals queued for it
 * (taking them: the process's own count, where /proc's SigQ is the user's,
 * which other processes move). */
static void* blocker(void* arg) {
    sigset_t all;
    sigfillset(&all);
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, _NSIG / 8);
    free(malloc(16)); /* a heap: listed, signalled */
    while (!g_stop) usleep(1000);
    sigset_t rt;
    sigemptyset(&rt);
    for (int s = SIGRTMIN; s <= SIGRTMAX; ++s) sigaddset(&rt, s);
    struct timespec zero = {0, 0};
    int n = 0;
    while (sigtimedwait(&rt, NULL, &zero) > 0) ++n;
    g_queued = n;
    return arg;
}

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "";
    pthread_t t;
    if (strcmp(mode, "exit_churn") == 0) {
        pthread_create(&t, NULL, churn, NULL);
        usleep(30000);
        return 0; /* the worker still runs: the exit report scans meanwhile */
    }
    if (strcmp(mode, "fork") == 0) {
        pthread_create(&t, NULL, scanner, NULL);
        int hung = 0;
        for (int i = 0; i < 100 && !hung; ++i) {
            pid_t c = fork();
            if (c == 0) {
                alarm(5);
                zmm_request_begin("child");
                void* volatile p = malloc(32);
                (void)p;
                zmm_request_end();
                _exit(0);
            }
            int st;
            waitpid(c, &st, 0);
            hung = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        }
        g_stop = 1;
        pthread_join(t, NULL);
        printf("fork %s\n", hung ? "FAIL: a child hung or died" : "ok");
        return 0;
    }
    if (strcmp(mode, "sigqueue") == 0) {
        pthread_create(&t, NULL, blocker, NULL);
        usleep(20000);
        for (int i = 0; i < 200; ++i) {
            zmm_request_begin("q");
            g_keep = malloc(24);
            zmm_request_end();
            free(g_keep);
        }
        g_stop = 1;
        pthread_join(t, NULL);
        printf("sigqueue queued %d\n", g_queued);
        return 0;
    }
    if (strcmp(mode, "emfile") == 0) {
        while (open("/dev/null", O_RDONLY) >= 0) {
        }
        zmm_request_begin("emfile");
        g_keep = calloc(1, 100);
        long n = zmm_request_end();
        printf("emfile %ld\n", n);
        return 0;
    }
    fprintf(stderr, "usage: scan_stress exit_churn|fork|sigqueue|emfile\n");
    return 2;
}
