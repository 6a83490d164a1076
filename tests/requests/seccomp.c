// Traced requests in a process whose seccomp filter kills it for opening a
// file: capturing backtraces must not open one (the unwinder once read
// /proc/self/maps for a new thread's stack, or a main-thread stack grown
// deeper). Run with ZMM_LEAKS=0 (a report opens files: the symbolizer's,
// the scan's /proc/self/maps). Prints "ok".
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "zmm/zmm.h"

static void* volatile sink;

static void traced_request(void) {
    zmm_request_begin("sandboxed");
    for (int i = 0; i < 100; ++i) free(malloc(64 + i));
    sink = malloc(32);
    zmm_request_end();
    free(sink);
}

__attribute__((noinline)) static void deep(int depth) {
    char pad[4096];
    memset(pad, depth, sizeof pad);
    __asm__ volatile("" : : "r"(pad) : "memory");
    if (depth) deep(depth - 1);
    else traced_request();
    __asm__ volatile("" : : "r"(pad) : "memory");
}

static void* thread_main(void* arg) {
    traced_request();
    deep(50);
    return arg;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    traced_request();  // before the filter: the main stack's top noted
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        printf("FAIL seccomp\n");
        return 1;
    }
    deep(80);  // the main stack, deeper than before
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    pthread_join(t, NULL);
    printf("ok\n");
    return 0;
}
