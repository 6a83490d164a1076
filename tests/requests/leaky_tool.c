/* An unmodified command-line tool for ZMM_REQUEST=process: it knows nothing
 * of zmm (no zmm.h) and uses no stdio (write(2) only), so every block it
 * leaks is its own.
 *
 *   leaky_tool MAIN_LEAKS THREAD_LEAKS EXIT_STATUS
 *
 * main leaks MAIN_LEAKS blocks (from leak_one, leak_two, leak_three in turn),
 * a thread (created and joined) leaks THREAD_LEAKS blocks (from
 * thread_leak), and the tool exits with EXIT_STATUS. Blocks freed late -- by
 * an atexit handler and by a static destructor -- are not leaks: the
 * process-wide request ends after them. The first stdout line names those
 * blocks' addresses ("late ADDR ADDR"). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

/* The leaked blocks' addresses are kept only disguised (a non-canonical
 * address points nowhere): the blocks are lost, not reachable from here. */
static volatile uintptr_t g_sink;
#define SINK(p) (g_sink = (uintptr_t)(p) ^ ((uintptr_t)1 << 62))
static void* g_freed_by_destructor;
static void* g_freed_by_atexit;

NOINLINE static void leak_one(void) { SINK(malloc(111)); }
NOINLINE static void leak_two(void) { SINK(calloc(1, 222)); }
NOINLINE static void leak_three(void) { SINK(malloc(333)); }

/* Dead frames keep stale pointers to the leaked blocks; the exit path's
 * frames, read as the stack at the end, would find some. Wipe them, as
 * LeakSanitizer's own tests do. */
NOINLINE static void scrub_stack(void) {
    volatile char area[64 * 1024];
    memset((char*)area, 0, sizeof area);
}

NOINLINE static void* thread_leak(void* arg) {
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; ++i) SINK(malloc(444));
    return NULL;
}

static void free_at_exit(void) { free(g_freed_by_atexit); }

__attribute__((destructor)) static void free_in_destructor(void) { free(g_freed_by_destructor); }

static void put_hex(char** p, uintptr_t v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    *(*p)++ = '0';
    *(*p)++ = 'x';
    while (n) *(*p)++ = tmp[--n];
}

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    long main_leaks = atol(argv[1]), thread_leaks = atol(argv[2]);
    int status = atoi(argv[3]);

    g_freed_by_destructor = malloc(555);
    g_freed_by_atexit = malloc(666);
    atexit(free_at_exit);
    char line[64], *p = line;
    memcpy(p, "late ", 5);
    p += 5;
    put_hex(&p, (uintptr_t)g_freed_by_destructor);
    *p++ = ' ';
    put_hex(&p, (uintptr_t)g_freed_by_atexit);
    *p++ = '\n';
    if (write(1, line, (size_t)(p - line)) < 0) return 2;

    /* work that frees what it allocates */
    for (int i = 0; i < 2000; ++i) {
        void* a = malloc((size_t)(i % 300) * 13 + 1);
        void* b = malloc((size_t)(i % 7) * 5000 + 4000);
        free(a);
        free(b);
    }
    for (long i = 0; i < main_leaks; ++i) {
        switch (i % 3) {
        case 0: leak_one(); break;
        case 1: leak_two(); break;
        default: leak_three(); break;
        }
    }
    if (thread_leaks) {
        pthread_t t;
        if (pthread_create(&t, NULL, thread_leak, (void*)(intptr_t)thread_leaks) != 0) return 2;
        pthread_join(t, NULL);
    }
    scrub_stack();
    return status;
}
