// The symbolizer process (zmm-symbolizer): leak reports name their frames
// while the program carries none of libdw's tables, sees no child process,
// keeps its files to itself, and still gets names after it closed the
// helper's socket and reused the number, and in a forked child.
//
// Prints "ok" lines or FAIL lines; check.py reads the three reports (pid in
// each header): each must name planted_leak with symbolizer.c:LINE.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zmm/zmm.h"

static int failed;
#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) {                    \
            printf("FAIL " __VA_ARGS__);  \
            printf("\n");                 \
            failed = 1;                   \
        }                                 \
    } while (0)

static void* volatile sink;

__attribute__((noinline)) static void planted_leak(size_t n) {
    sink = malloc(n);
    sink = NULL;  // lost
}

static void leaky_request(const char* name) {
    CHECK(zmm_request_begin(name) > 0, "begin %s", name);
    planted_leak(48);
    long leaked = zmm_request_end();
    CHECK(leaked == 1, "%s: %ld leaks, expected 1", name, leaked);
    fflush(stderr);
}

static int maps_contain(const char* what) {
    FILE* f = fopen("/proc/self/maps", "r");
    char line[1024];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, what)) found = 1;
    if (f) fclose(f);
    return found;
}

// The fd numbers of this process's sockets.
static int socket_fds(int* out, int max) {
    int n = 0;
    DIR* d = opendir("/proc/self/fd");
    struct dirent* e;
    while (d && (e = readdir(d)) && n < max) {
        char path[64], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len <= 0) continue;
        target[len] = 0;
        if (strncmp(target, "socket:", 7) == 0) out[n++] = atoi(e->d_name);
    }
    if (d) closedir(d);
    return n;
}

// Under a seccomp filter zmm names frames inside the process (a filter may
// kill a process that clones or execs).
static int seccomp_filtered(void) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    int mode = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Seccomp:", 8) == 0) mode = atoi(line + 8);
    if (f) fclose(f);
    return mode != 0;
}

// symbolizer subreaper: a child subreaper gets no helper (it would be its
// child): names from inside, still no child visible. symbolizer chdir: the
// helper is found beside libzmm.so after the program left the directory a
// relative LD_PRELOAD names.
static int other_mode(const char* mode) {
    if (strcmp(mode, "subreaper") == 0) {
        CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, "prctl");
        leaky_request("subreaper");
        errno = 0;
        CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "a subreaper sees a child (errno %d)", errno);
        CHECK(maps_contain("libdw"), "a subreaper: libdw is not mapped (a helper was started?)");
    } else if (strcmp(mode, "chdir") == 0) {
        CHECK(chdir("/") == 0, "chdir");
        leaky_request("chdir");
        CHECK(!maps_contain("libdw") || seccomp_filtered(), "after chdir: libdw is mapped (no helper found)");
    } else {
        printf("FAIL unknown mode %s\n", mode);
        return 2;
    }
    if (!failed) printf("ok\n");
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1) return other_mode(argv[1]);
    // A pipe the program waits to see closed: the helper must not hold it.
    int p[2];
    CHECK(pipe(p) == 0, "pipe");

    leaky_request("first");
    const int helper = !seccomp_filtered();
    if (!helper) printf("seccomp filter: names from inside the process\n");
    CHECK(maps_contain("libdw") == !helper, "libdw %s mapped in the program after a report", helper ? "is" : "is not");
    errno = 0;
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "waitpid(-1) sees a child (errno %d)", errno);
    close(p[1]);
    struct pollfd pfd = {p[0], POLLIN, 0};
    char c;
    CHECK(poll(&pfd, 1, 5000) == 1 && read(p[0], &c, 1) == 0, "the pipe's write end is held open elsewhere");
    close(p[0]);

    // The program closes the helper's socket and reuses its number for a
    // file of its own: zmm must not write there, and starts a new helper.
    int socks[8];
    int n = socket_fds(socks, 8);
    CHECK(n == helper, "%d sockets after the first report, expected %d (the helper's)", n, helper);
    char file_name[] = "/tmp/zmm-symbolizer-test-XXXXXX";
    int file = mkstemp(file_name);
    CHECK(file >= 0, "mkstemp");
    if (n >= 1) {
        close(socks[0]);
        CHECK(dup2(file, socks[0]) == socks[0], "dup2");
    }
    leaky_request("second");
    struct stat st;
    CHECK(fstat(file, &st) == 0 && st.st_size == 0, "zmm wrote %lld bytes into the program's file",
          (long long)st.st_size);
    unlink(file_name);

    // A forked child reports with a helper of its own.
    pid_t child = fork();
    if (child == 0) {
        leaky_request("child");
        _exit(failed);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child failed (status %d)", status);
    printf("pid %d child %d\n", (int)getpid(), (int)child);
    if (!failed) printf("ok\n");
    return 0;
}
