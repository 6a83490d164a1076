/* siginterrupt() as glibc has it, under the preload (which interposes
 * signal and sigaction): after siginterrupt(sig, 1) a handler installed by
 * signal() interrupts a blocked read() (EINTR); after siginterrupt(sig, 0)
 * the read is restarted; sigaction() reports SA_RESTART accordingly. The
 * same program passes on plain glibc. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "on_zmm.h"

/* deprecated in glibc, still used by the programs zmm runs under */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static volatile sig_atomic_t g_caught;
static void on_usr1(int sig) {
    (void)sig;
    g_caught++;
    free(malloc(32)); /* a handler that allocates, as they do */
}

struct reader {
    int fd;
    ssize_t got;
    int err;
};

static void* read_one(void* arg) {
    struct reader* r = arg;
    char c;
    r->got = read(r->fd, &c, 1);
    r->err = errno;
    return NULL;
}

static int failed;
static void check(int ok, const char* what) {
    if (!ok) {
        fprintf(stderr, "siginterrupt: FAIL: %s\n", what);
        failed = 1;
    }
}

/* Starts a reader blocked on an empty pipe, signals it, and returns what
 * its read() returned once the pipe gets a byte (50 ms later). */
static struct reader interrupted_read(void) {
    int p[2];
    if (pipe(p) != 0) exit(2);
    struct reader r = {p[0], -2, 0};
    pthread_t t;
    pthread_create(&t, NULL, read_one, &r);
    usleep(50000); /* blocked in read() by now */
    int before = g_caught;
    pthread_kill(t, SIGUSR1);
    while (g_caught == before) usleep(1000);
    usleep(50000);
    if (write(p[1], "x", 1) != 1) exit(2);
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    return r;
}

static int restarts(void) {
    struct sigaction act;
    sigaction(SIGUSR1, NULL, &act);
    return (act.sa_flags & SA_RESTART) != 0;
}

int main(void) {
    if (!on_zmm_check("siginterrupt", "signal", (const void*)&signal)) { /* plain glibc: the same checks */ }
    check(siginterrupt(SIGUSR1, 1) == 0, "siginterrupt(SIGUSR1, 1) failed");
    check(signal(SIGUSR1, on_usr1) != SIG_ERR, "signal");
    check(!restarts(), "after siginterrupt(sig, 1), signal() set SA_RESTART");
    struct reader r = interrupted_read();
    check(r.got == -1 && r.err == EINTR, "the read was not interrupted (EINTR)");

    check(siginterrupt(SIGUSR1, 0) == 0, "siginterrupt(SIGUSR1, 0) failed");
    check(restarts(), "after siginterrupt(sig, 0), SA_RESTART is not set");
    r = interrupted_read();
    check(r.got == 1, "the read was not restarted");
    check(signal(SIGUSR1, on_usr1) != SIG_ERR && restarts(), "signal() after siginterrupt(sig, 0): SA_RESTART");

    check(siginterrupt(SIGUSR1, 1) == 0 && !restarts(), "siginterrupt on an installed handler keeps SA_RESTART");
    r = interrupted_read();
    check(r.got == -1 && r.err == EINTR, "siginterrupt on an installed handler: the read was not interrupted");
    check(siginterrupt(0, 1) == -1 && errno == EINVAL, "siginterrupt(0) must fail with EINVAL");
    if (!failed) printf("siginterrupt ok\n");
    return failed;
}
