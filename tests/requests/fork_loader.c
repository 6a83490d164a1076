// fork() while another thread holds the dynamic loader's lock (here, inside
// dl_iterate_phdr's callback; dlopen and dlclose hold it as well). glibc's
// fork resets the child's dl_load_lock, not that one: in the child it stays
// held for good, and dl_iterate_phdr waits for ever. The child's traced
// allocations, from a call site the parent never used (zmm computes its
// unwind rule then, and the depot looks the module up), and its request's
// end (the leak scan reads the modules' data) must not wait for it: the
// child reports its one leak with its frames. A hang ends in SIGALRM.
// Arguments: "parent" (the parent runs a request first: libunwind is loaded
// before the fork, for the child not to use), "dlopen" (the child opens and
// closes a library already loaded, through zmm's dlopen and dlclose).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zmm/zmm.h"

static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_inside, g_release;
void* volatile g_kept;  // the leak, lost once cleared

static int hold(struct dl_phdr_info* info, size_t size, void* data) {
    (void)info, (void)size, (void)data;
    pthread_mutex_lock(&g_mutex);
    g_inside = 1;
    pthread_cond_broadcast(&g_cond);
    while (!g_release) pthread_cond_wait(&g_cond, &g_mutex);
    pthread_mutex_unlock(&g_mutex);
    return 1;
}

static void* holder(void* arg) {
    (void)arg;
    dl_iterate_phdr(hold, NULL);
    return NULL;
}

__attribute__((noinline)) void* planted_in_child(size_t n) {
    void* p = malloc(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) void* caller_in_child(void) {
    void* p = planted_in_child(48);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

int main(int argc, char** argv) {
    int parent_request = 0, child_dlopen = 0;
    for (int i = 1; i < argc; ++i) {
        parent_request |= strcmp(argv[i], "parent") == 0;
        child_dlopen |= strcmp(argv[i], "dlopen") == 0;
    }
    if (parent_request) {
        zmm_request_begin("parent");
        free(malloc(24));
        zmm_request_end();
    }
    pthread_t t;
    if (pthread_create(&t, NULL, holder, NULL) != 0) return 2;
    pthread_mutex_lock(&g_mutex);
    while (!g_inside) pthread_cond_wait(&g_cond, &g_mutex);
    pthread_mutex_unlock(&g_mutex);

    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        alarm(30);
        if (child_dlopen) {
            void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
            if (!libc) _exit(3);
            dlclose(libc);
        }
        zmm_request_begin("child");
        for (int i = 0; i < 10; ++i) free(caller_in_child());
        g_kept = caller_in_child();
        g_kept = NULL;
        long leaked = zmm_request_end();
        printf("child leaked %ld\n", leaked);
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    pthread_mutex_lock(&g_mutex);
    g_release = 1;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_mutex);
    pthread_join(t, NULL);
    if (WIFSIGNALED(status)) {
        printf("child killed by signal %d%s\n", WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (it hung)" : "");
        return 1;
    }
    printf("child exit %d\n", WEXITSTATUS(status));
    return WEXITSTATUS(status) != 0;
}
