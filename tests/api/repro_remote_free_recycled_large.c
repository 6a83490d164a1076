/* Regression test for a zmm bug (found by stress_churn):
 *
 * A large block (3073 B .. 2 MiB - 4 KiB) freed by a thread other than its
 * owner gets the remote-free link and its shadow written into its first 16
 * bytes (Heap::free_remote, core/heap.cpp). When its pages are handed out again
 * by malloc (Heap::alloc_large, or the large path of Heap::alloc_aligned),
 * those 16 bytes are left as they were. If the program does not happen to
 * overwrite them (a buffer it never filled, or only sparsely), and frees the
 * block from another thread again, free_remote finds a valid shadow and
 * reports "zmm: double free of 0x..." and aborts: a valid program killed.
 * (alloc_small clears the shadow word for this reason; alloc_large does not.)
 *
 * glibc: no error. The scenario runs in a child process so that the test can
 * say what happened. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "on_zmm.h"

static void* free_it(void* p) {
    free(p);
    return NULL;
}

static void free_in_other_thread(void* p) {
    pthread_t t;
    if (pthread_create(&t, NULL, free_it, p) != 0 || pthread_join(t, NULL) != 0) _exit(3);
}

static void scenario(size_t size, int aligned) {
    void* a = NULL;
    if (aligned) {
        if (posix_memalign(&a, 8192, size) != 0) _exit(3);
    } else {
        a = malloc(size);
    }
    void* keep = malloc(size); /* keeps the chunk in use */
    if (!a || !keep) _exit(3);
    free_in_other_thread(a);   /* a remote free: link + shadow stored in a's first 16 bytes */
    malloc_trim(0);            /* drains the remote free (any slow path of the owner would) */
    void* b = NULL;
    if (aligned) {
        if (posix_memalign(&b, 8192, size) != 0) _exit(3);
    } else {
        b = malloc(size);
    }
    if (!b) _exit(3);
    /* the program writes b, but not its first 16 bytes */
    memset((char*)b + 16, 0x42, size - 16);
    free_in_other_thread(b);   /* zmm: "double free" + abort */
    free(keep);
}

int main(void) {
    on_zmm_check("repro_remote_free_recycled_large", "malloc", (const void*)&malloc);
    int failed = 0;
    size_t sizes[] = {64 * 1024, 5000, 1024 * 1024};
    for (int aligned = 0; aligned < 2; ++aligned)
        for (int i = 0; i < 3; ++i) {
            fflush(stderr);
            pid_t pid = fork();
            if (pid < 0) return 1;
            if (pid == 0) {
                alarm(10);
                scenario(sizes[i], aligned);
                _exit(0);
            }
            int st = 0;
            if (waitpid(pid, &st, 0) != pid) return 1;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr,
                        "repro_remote_free_recycled_large: FAIL: %s(%zu): a block whose pages were remote-freed "
                        "before, freed from another thread again: the process %s %d\n",
                        aligned ? "posix_memalign(8192, ...)" : "malloc", sizes[i],
                        WIFSIGNALED(st) ? "died of signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                failed = 1;
            }
        }
    if (!failed) fprintf(stderr, "repro_remote_free_recycled_large: passed\n");
    return failed;
}
