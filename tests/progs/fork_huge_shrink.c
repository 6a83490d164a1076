// fork() while another thread shrinks a huge block in place: the child
// inherits that thread's heap as an orphan, as the fork caught it, and its
// leak scan at exit (ZMM_REQUEST=process) reads the orphan's huge blocks.
// A header that still named the pages being unmapped made the child's scan
// read them (SIGSEGV in about one fork in 15). Every child must exit 0.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_stop;

static void* shrinker(void* arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        char* p = malloc(12 << 20);
        if (!p) return NULL;
        p[0] = 1;
        p = realloc(p, 3 << 20);  // in place: the tail is unmapped
        free(p);
    }
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, shrinker, NULL);
    int forks = 0, bad = 0;
    const double end = now() + 3.0;
    while (forks < 300 && now() < end) {
        pid_t pid = fork();
        if (pid < 0) break;
        if (pid == 0) {
            void* p = malloc(100);
            memset(p, 1, 100);
            exit(0);  // the process-wide request's report: the scan
        }
        int status = 0;
        waitpid(pid, &status, 0);
        ++forks;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++bad;
            fprintf(stderr, "child %d: %s %d\n", forks, WIFSIGNALED(status) ? "signal" : "exit",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
    }
    atomic_store(&g_stop, 1);
    pthread_join(t, NULL);
    if (bad || forks == 0) {
        fprintf(stderr, "%d of %d children failed\n", bad, forks);
        return 1;
    }
    return 0;
}
