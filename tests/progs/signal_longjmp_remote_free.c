// A signal handler that leaves cross-thread frees by siglongjmp, from any
// instruction inside zmm: a free may be abandoned half done (its block is
// then lost to the program, as POSIX leaves it), and everything else must
// hold together. One thread allocates blocks of a few sizes (2560 B: a bin
// whose outbox chain is sent every 2 blocks, so that appends to an empty
// chain are frequent), a second frees them (each a cross-thread free, into
// its outbox), and a third signals the second as fast as it can; the
// handler, installed with sigaction (so zmm wraps it), jumps back into the
// freeing loop whenever the interrupted instruction is zmm's. Then the
// threads exit (their outboxes are sent), and the heaps are used again.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

enum { k_batch = 2048 };
static const size_t k_sizes[] = {2560, 48, 1000, 2560, 320};

static uintptr_t g_lo, g_hi;  // zmm's code
static sigjmp_buf g_jump;
static volatile sig_atomic_t g_in_free;
static atomic_long g_jumps;
static atomic_int g_stop;

static void* g_blocks[k_batch];
static atomic_int g_ready;  // 1: a batch waits for the freeing thread
static pthread_t g_freer;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void on_usr1(int sig, siginfo_t* info, void* context) {
    (void)sig;
    (void)info;
    const uintptr_t pc = (uintptr_t)((ucontext_t*)context)->uc_mcontext.gregs[REG_RIP];
    if (g_in_free && pc >= g_lo && pc < g_hi) {
        atomic_fetch_add(&g_jumps, 1);
        siglongjmp(g_jump, 1);
    }
}

// zmm's executable segment, from the object that defines malloc.
static int find_text(struct dl_phdr_info* info, size_t size, void* base) {
    (void)size;
    if ((void*)info->dlpi_addr != base) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            g_lo = info->dlpi_addr + ph->p_vaddr;
            g_hi = g_lo + ph->p_memsz;
        }
    }
    return 1;
}

static void* freer(void* arg) {
    (void)arg;
    void* own = malloc(16);  // a heap of its own, whose outbox the frees fill
    while (!atomic_load(&g_stop)) {
        if (!atomic_load_explicit(&g_ready, memory_order_acquire)) continue;
        // (One sigsetjmp a batch and a jump: each saves the signal mask, a
        // system call, where no signal lands in zmm's code.)
        volatile int next = 0;
        sigsetjmp(g_jump, 1);
        g_in_free = 0;  // (after a jump too: that free was abandoned)
        while (next < k_batch) {
            const int i = next++;
            g_in_free = 1;
            free(g_blocks[i]);
            g_in_free = 0;
        }
        atomic_store_explicit(&g_ready, 0, memory_order_release);
    }
    free(own);
    return NULL;
}

static void* signaller(void* arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) pthread_kill(g_freer, SIGUSR1);
    return NULL;
}

int main(void) {
    Dl_info d;
    if (!dladdr((void*)malloc, &d) || !d.dli_fname || strstr(d.dli_fname, "libc.so")) {
        fprintf(stderr, "malloc is not zmm's (%s)\n", d.dli_fname ? d.dli_fname : "?");
        return 1;
    }
    dl_iterate_phdr(find_text, d.dli_fbase);
    if (!g_lo) {
        fprintf(stderr, "zmm's code not found\n");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);

    pthread_create(&g_freer, NULL, freer, NULL);
    pthread_t sig;
    pthread_create(&sig, NULL, signaller, NULL);
    // Until 1000 jumps out of zmm (a few seconds on an idle machine), or 10 s
    // on a loaded one.
    const double end = now() + 10.0;
    long batches = 0;
    while (now() < end && atomic_load(&g_jumps) < 1000) {
        while (atomic_load_explicit(&g_ready, memory_order_acquire)) {
        }
        for (int i = 0; i < k_batch; ++i) {
            size_t n = k_sizes[i % 5];
            g_blocks[i] = malloc(n);
            if (!g_blocks[i]) return 1;
            memset(g_blocks[i], i & 0xff, n);
        }
        atomic_store_explicit(&g_ready, 1, memory_order_release);
        ++batches;
    }
    while (atomic_load_explicit(&g_ready, memory_order_acquire)) {
    }
    atomic_store(&g_stop, 1);
    pthread_join(sig, NULL);
    pthread_join(g_freer, NULL);  // its outbox is sent at its exit
    if (getenv("SHOW_JUMPS")) fprintf(stderr, "%ld jumps, %ld batches\n", atomic_load(&g_jumps), batches);
    if (atomic_load(&g_jumps) == 0) {
        fprintf(stderr, "no jump out of zmm in %ld batches: the case did not run\n", batches);
        return 1;
    }
    // The heaps again: this thread's (the freed blocks came back to it) and
    // a new thread's (which may adopt the freeing thread's heap).
    for (int r = 0; r < 50; ++r) {
        for (int i = 0; i < k_batch; ++i) {
            size_t n = k_sizes[i % 5];
            g_blocks[i] = malloc(n);
            if (!g_blocks[i]) return 1;
            memset(g_blocks[i], (r + i) & 0xff, n);
        }
        for (int i = 0; i < k_batch; ++i) {
            const unsigned char* p = g_blocks[i];
            size_t n = k_sizes[i % 5];
            for (size_t k = 0; k < n; k += 61)
                if (p[k] != (unsigned char)((r + i) & 0xff)) {
                    fprintf(stderr, "block %d changed under the program\n", i);
                    return 1;
                }
            free(g_blocks[i]);
        }
    }
    return 0;
}
