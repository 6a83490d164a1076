// The program's handlers are wrapped (preload's sigaction), and that must not
// show: a query returns the handler and flags installed, signal() returns the
// previous handler, sigset holds and releases, SA_RESETHAND still resets
// (the same checks pass without zmm). A handler left by siglongjmp
// must not leave the thread on the reentry path: what it allocates afterwards
// is its request's again (counted by zmm_memory_usage).
#define _GNU_SOURCE  // sigset (deprecated, and still used: its semantics are checked)
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <zmm/zmm.h>

#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sigjmp_buf g_jump;
static volatile int g_runs;

static void plain(int sig) { (void)sig; g_runs++; }
static void with_info(int sig, siginfo_t* info, void* context) {
    (void)sig;
    (void)context;
    if (info) g_runs++;
}
static void jump_out(int sig) {
    (void)sig;
    free(malloc(100));  // on the reentry path
    siglongjmp(g_jump, 1);
}

#define CHECK(cond)                                              \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "line %d: %s\n", __LINE__, #cond);   \
            return 1;                                            \
        }                                                        \
    } while (0)

int main(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = plain;
    sa.sa_flags = SA_RESTART;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
    CHECK(old.sa_handler == plain);
    CHECK(!(old.sa_flags & SA_SIGINFO));
    CHECK(old.sa_flags & SA_RESTART);
    raise(SIGUSR1);
    CHECK(g_runs == 1);

    sa.sa_sigaction = with_info;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGUSR1, &sa, &old) == 0);
    CHECK(old.sa_handler == plain);  // the previous one, as installed
    CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
    CHECK(old.sa_sigaction == with_info && (old.sa_flags & SA_SIGINFO));
    raise(SIGUSR1);
    CHECK(g_runs == 2);

    CHECK((void*)signal(SIGUSR1, plain) == (void*)with_info);
    CHECK(signal(SIGUSR1, SIG_IGN) == plain);
    CHECK(signal(SIGUSR1, SIG_DFL) == SIG_IGN);

    // System V's sigset: installs (wrapped: a query returns it), holds, releases.
    CHECK(sigset(SIGUSR1, plain) == SIG_DFL);
    CHECK(sigaction(SIGUSR1, NULL, &old) == 0 && old.sa_handler == plain);
    CHECK(sigset(SIGUSR1, SIG_HOLD) == plain);
    raise(SIGUSR1);  // pending while held
    CHECK(g_runs == 2);
    CHECK(sigset(SIGUSR1, plain) == SIG_HOLD);  // released: the pending one runs
    CHECK(g_runs == 3);
    CHECK(signal(SIGUSR1, SIG_DFL) == plain);

    sa.sa_handler = plain;
    sa.sa_flags = SA_RESETHAND;
    CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
    raise(SIGUSR2);
    CHECK(g_runs == 4);
    CHECK(sigaction(SIGUSR2, NULL, &old) == 0);
    CHECK(old.sa_handler == SIG_DFL);

    CHECK(signal(SIGUSR1, jump_out) == SIG_DFL);
    CHECK(zmm_request_begin("after siglongjmp") > 0);
    for (int i = 0; i < 3; ++i) {
        if (sigsetjmp(g_jump, 1) == 0) raise(SIGUSR1);
    }
    size_t before = zmm_memory_usage(0);
    void* blocks[64];
    for (int i = 0; i < 64; ++i) blocks[i] = malloc(1000);
    size_t after = zmm_memory_usage(0);
    CHECK(after >= before + 64 * 1000);
    for (int i = 0; i < 64; ++i) free(blocks[i]);
    CHECK(zmm_request_end() == 0);
    return 0;
}
