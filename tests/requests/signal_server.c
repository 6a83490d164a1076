/* An unmodified long-running program for ZMM_REQUEST=signal: it serves
 * commands from stdin ("work", "leak", "block", "quit") and knows nothing
 * of zmm. "block" makes a second thread allocate (and leak) and then block
 * in read() on a pipe that nobody writes until "quit": its share of the
 * process-wide request must still be reported, within a second of the end. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void* g_kept[64];
static int g_kept_count;
static int g_pipe[2];
static pthread_t g_blocked;
static int g_have_blocked;

NOINLINE static void work(void) {
    for (int i = 0; i < 1000; ++i) free(malloc(16 + (size_t)i * 3));
}

NOINLINE static void leak_in_handler(void) { g_kept[g_kept_count++] = malloc(777); }

NOINLINE static void leak_in_blocked_thread(void) { g_kept[g_kept_count++] = malloc(555); }

static void* blocked_thread(void* arg) {
    (void)arg;
    leak_in_blocked_thread();
    char c;
    ssize_t n = read(g_pipe[0], &c, 1);  // blocks until "quit"
    (void)n;
    return NULL;
}

int main(void) {
    char line[128];
    if (pipe(g_pipe) != 0) return 2;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "work", 4) == 0) work();
        if (strncmp(line, "leak", 4) == 0) leak_in_handler();
        if (strncmp(line, "block", 5) == 0 && !g_have_blocked) {
            g_have_blocked = 1;
            pthread_create(&g_blocked, NULL, blocked_thread, NULL);
        }
        if (strncmp(line, "quit", 4) == 0) break;
        printf("done %s", line);
        fflush(stdout);
    }
    if (g_have_blocked) {
        if (write(g_pipe[1], "x", 1) != 1) return 2;
        pthread_join(g_blocked, NULL);
    }
    return 0;
}
