// The memory limit of requests (tests/requests, driven by check.py).
//
//   limit fatal-api large|huge|huge-odd|small   zmm_set_memory_limit(8 MiB), then a request
//                                 that allocates until zmm ends the process
//   limit fatal-env large|huge   the same with the limit from ZMM_MEMORY_LIMIT
//   limit enomem                 (ZMM_LIMIT_ACTION=enomem) NULL and ENOMEM from
//                                 the malloc family, std::bad_alloc from new,
//                                 the new_handler contract, persistent memory
//                                 unlimited, a fresh budget for each request
//   limit handler                a limit handler that longjmps out, one that
//                                 raises the limit, then one that returns
//                                 (the fatal action follows)
//
// The limit counts OS memory as ZendMM does: 2 MiB chunks (page 0 is the
// header: 511 pages for runs) and huge blocks, checked when a request heap
// needs a new chunk or a huge block. An 8 MiB limit is four chunks, which
// hold 4 * (511 / 16) = 124 runs of 64 KiB.
//
// Checks that need no report are made here: a failure prints "FAIL ..." and
// exits 1. The last stdout line of a run that ends normally is "ok".
#include <zmm/zmm.h>

#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <new>

#include "selfcheck.h"

#define NOINLINE __attribute__((noinline))

namespace {

constexpr size_t k_mib = size_t{1} << 20;
constexpr size_t k_limit = 8 * k_mib;
constexpr size_t k_run = 65536;
constexpr long k_runs_per_limit = 4 * (511 / 16);

void* g_blocks[4096];
long g_count = 0;

void say(const char* line) {
    ssize_t r = write(2, line, strlen(line));
    (void)r;
}

// Allocates 64 KiB runs into g_blocks until malloc fails (or zmm ends the
// process); returns how many it got.
NOINLINE long fill_large() {
    while (g_count < 4096) {
        void* p = malloc(k_run);
        if (!p) break;
        memset(p, 0x5a, 64);
        g_blocks[g_count++] = p;
    }
    return g_count;
}

// Huge blocks of 3 MiB (+ `odd` bytes) until malloc fails (or zmm ends the process).
NOINLINE long fill_huge(size_t odd = 0) {
    while (g_count < 4096) {
        void* p = malloc(3 * k_mib + odd);
        if (!p) break;
        static_cast<char*>(p)[0] = 1;
        g_blocks[g_count++] = p;
    }
    return g_count;
}

// Small blocks of 100 bytes until malloc fails (or zmm ends the process).
void* g_small[1 << 20];  // (kept: the blocks stay live)
NOINLINE long fill_small() {
    long n = 0;
    while (n < (1 << 20)) {
        void* p = malloc(100);
        if (!p) break;
        memset(p, 0x5a, 16);
        g_small[n++] = p;
    }
    return n;
}

void free_blocks() {
    for (long i = 0; i < g_count; ++i) free(g_blocks[i]);
    g_count = 0;
}

int fatal(bool by_api, const char* kind) {
    if (by_api) CHECK(zmm_set_memory_limit(k_limit) == 0);
    // Persistent memory is not limited, even past the limit.
    void* persistent = malloc(12 * k_mib);
    CHECK(persistent != nullptr);
    printf("ready\n");
    fflush(stdout);
    if (zmm_request_begin("limited") <= 0) {
        printf("FAIL zmm_request_begin\n");
        return 1;
    }
    long n = strcmp(kind, "huge") == 0       ? fill_huge()
             : strcmp(kind, "huge-odd") == 0 ? fill_huge(32)
             : strcmp(kind, "small") == 0    ? fill_small()
                                             : fill_large();
    // Not reached: zmm ends the process with status 255.
    zmm_request_end();
    printf("FAIL survived the limit with %ld blocks\n", n);
    return 1;
}

// ---- enomem ----

int g_new_handler_calls = 0;

void new_handler_frees_room() {
    // The new_handler contract: make memory available, and operator new
    // tries again. Two 64 KiB runs back to the request.
    ++g_new_handler_calls;
    free(g_blocks[--g_count]);
    free(g_blocks[--g_count]);
}

NOINLINE void enomem_in_request(const char* name, bool leak) {
    int id = zmm_request_begin(name);
    CHECK(id > 0);
    errno = 0;
    long n = fill_large();
    CHECK(errno == ENOMEM);
    printf("%s: %ld runs of 64 KiB\n", name, n);
    // A fresh budget: the limit's worth of new chunks. After a request that
    // leaked, its chunks (left out of the limit) may add a few runs of their
    // free space, never less.
    CHECK(n >= k_runs_per_limit && n <= k_runs_per_limit + 511 / 16);
    CHECK(zmm_memory_usage(1) <= k_limit);
    CHECK(zmm_memory_peak_usage(1) <= k_limit);

    // Small blocks still fit in the chunks' free pages.
    void* small = malloc(100);
    CHECK(small != nullptr);
    // Everything that needs new pages fails, with ENOMEM.
    errno = 0;
    CHECK(malloc(3 * k_mib) == nullptr && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(1, k_run) == nullptr && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(1024, 4096) == nullptr && errno == ENOMEM);
    memset(small, 's', 100);
    errno = 0;
    CHECK(realloc(small, k_run) == nullptr && errno == ENOMEM);
    CHECK(static_cast<char*>(small)[99] == 's');  // the old block is intact
    void* aligned = nullptr;
    CHECK(posix_memalign(&aligned, 4096, k_run) == ENOMEM && aligned == nullptr);
    errno = 0;
    CHECK(aligned_alloc(4096, k_run) == nullptr && errno == ENOMEM);
    free(small);

    bool threw = false;
    try {
        char* volatile p = new char[k_run];
        p[0] = 1;
        delete[] p;
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    CHECK(threw);
    CHECK(new (std::nothrow) char[k_run] == nullptr);

    // A new_handler that frees room: operator new succeeds after one call.
    std::set_new_handler(new_handler_frees_room);
    g_new_handler_calls = 0;
    char* q = new char[k_run];
    std::set_new_handler(nullptr);
    CHECK(g_new_handler_calls == 1);
    q[k_run - 1] = 1;
    delete[] q;

    // Lowering the limit below what the request uses is refused.
    CHECK(zmm_set_memory_limit(2 * k_mib) == -1);
    CHECK(zmm_set_memory_limit(k_limit) == 0);

    if (!leak) free_blocks();
    long leaked = zmm_request_end();
    CHECK(leaked == (leak ? g_count : 0));
    printf("%s: %ld leaked\n", name, leaked);
}

int enomem() {
    CHECK(zmm_set_memory_limit(k_limit) == 0);
    printf("ready\n");
    fflush(stdout);
    // Persistent memory is not limited: 20 MiB of runs and a 10 MiB block.
    CHECK(fill_large() >= 300);
    void* big = malloc(10 * k_mib);
    CHECK(big != nullptr);
    free(big);
    free_blocks();

    enomem_in_request("first", false);
    // A new request has a fresh budget: the same again, twice; the second
    // leaks its blocks (they move to the thread's heap at its end) and the
    // third still gets the whole budget.
    enomem_in_request("second", true);
    long kept = g_count;
    void* leaked[4096];
    memcpy(leaked, g_blocks, sizeof(void*) * static_cast<size_t>(kept));
    g_count = 0;
    enomem_in_request("third", false);
    for (long i = 0; i < kept; ++i) free(leaked[i]);

    // Small blocks, request after request, each freeing all of them: each
    // request gets the limit's worth, no more (the runs an earlier request
    // emptied are the next one's memory, not a free extra: the second got
    // 7 MiB of blocks under the 4 MiB limit, later ones more).
    static void* smalls[1 << 16];
    for (int round = 0; round < 4; ++round) {
        CHECK(zmm_request_begin("small") > 0);
        long n = 0;
        errno = 0;
        while (n < (1 << 16) && (smalls[n] = malloc(1024)) != nullptr) ++n;
        CHECK(errno == ENOMEM);
        printf("small %d: %ld blocks of 1 KiB, usage %zu real %zu\n", round, n, zmm_memory_usage(0), zmm_memory_usage(1));
        CHECK(n <= static_cast<long>(k_limit / 1024));
        CHECK(n >= static_cast<long>(k_limit / 1024 / 4 * 3));
        CHECK(zmm_memory_usage(1) <= k_limit);
        for (long i = 0; i < n; ++i) free(smalls[i]);
        CHECK(zmm_request_end() == 0);
    }

    // And persistent memory again, after the requests.
    CHECK(fill_large() >= 300);
    free_blocks();
    printf(g_failures ? "failed\n" : "ok\n");
    return g_failures ? 1 : 0;
}

// ---- handler ----

jmp_buf g_bailout;
int g_handler_calls = 0;
size_t g_handler_limit = 0, g_handler_requested = 0;

void bailout_handler(size_t limit, size_t requested, void* arg) {
    ++g_handler_calls;
    g_handler_limit = limit;
    g_handler_requested = requested;
    longjmp(*static_cast<jmp_buf*>(arg), 1);
}

int g_raises = 0;
void raise_once_then_bailout(size_t limit, size_t requested, void* arg) {
    ++g_handler_calls;
    g_handler_limit = limit;
    g_handler_requested = requested;
    if (g_raises++ == 0) {
        zmm_set_memory_limit(2 * k_limit);  // a cooperating server grants more
        return;
    }
    longjmp(*static_cast<jmp_buf*>(arg), 1);
}

void returning_handler(size_t, size_t, void*) { say("limit handler returned\n"); }

int handler() {
    CHECK(zmm_set_memory_limit(k_limit) == 0);
    printf("ready\n");
    fflush(stdout);

    // 1. longjmp out, as PHP's bailout does (the action is fatal: the
    //    handler runs first, and never returns).
    zmm_set_limit_handler(bailout_handler, &g_bailout);
    CHECK(zmm_request_begin("bailout") > 0);
    if (setjmp(g_bailout) == 0) {
        fill_large();
        CHECK(!"the handler did not run");
    }
    CHECK(g_handler_calls == 1);
    CHECK(g_handler_limit == k_limit);
    CHECK(g_handler_requested > 0);
    CHECK(g_count == k_runs_per_limit);
    printf("bailout: %ld runs, handler called with limit %zu, requested %zu\n", g_count, g_handler_limit,
           g_handler_requested);
    // The heap is sound after the longjmp: what the request holds can be
    // freed, small blocks still fit, and the request ends clean.
    free_blocks();
    void* p = malloc(5000);
    CHECK(p != nullptr);
    free(p);
    CHECK(zmm_request_end() == 0);

    // 2. A handler that raises the limit: the allocation goes on, up to the
    //    new limit, where the handler bails out.
    g_handler_calls = 0;
    zmm_set_limit_handler(raise_once_then_bailout, &g_bailout);
    CHECK(zmm_set_memory_limit(k_limit) == 0);
    CHECK(zmm_request_begin("raised") > 0);
    if (setjmp(g_bailout) == 0) {
        fill_large();
        CHECK(!"the handler did not run");
    }
    CHECK(g_handler_calls == 2);
    CHECK(g_handler_limit == 2 * k_limit);
    CHECK(g_count == 2 * k_runs_per_limit);
    printf("raised: %ld runs\n", g_count);
    free_blocks();
    CHECK(zmm_request_end() == 0);

    // 3. The next request gets the whole budget again, without the handler.
    zmm_set_limit_handler(nullptr, nullptr);
    CHECK(zmm_set_memory_limit(k_limit) == 0);
    CHECK(zmm_request_begin("again") > 0);
    for (int i = 0; i < 100; ++i) g_blocks[g_count++] = malloc(k_run);
    for (int i = 0; i < 100; ++i) CHECK(g_blocks[i] != nullptr);
    free_blocks();
    CHECK(zmm_request_end() == 0);

    if (g_failures) {
        printf("failed\n");
        return 1;
    }
    printf("ok\n");
    fflush(stdout);
    // 4. A handler that returns: the configured action (fatal) follows.
    zmm_set_limit_handler(returning_handler, nullptr);
    CHECK(zmm_request_begin("returns") > 0);
    fill_large();
    printf("FAIL survived the limit\n");
    return 1;
}

}  // namespace

// ---- spread ----

// A request keeps a few small blocks spread over five chunks; the next one,
// under a 4 MiB limit, starts with none of those chunks charged (they hold
// the kept blocks), takes a 1 MiB block and more. (The base was the chunks
// the kept bytes would fill, one: 8 MiB charged before the request did
// anything, the limit refused, the malloc fatal.)
void* g_spread[10000];
int spread() {
    CHECK(zmm_request_begin("keeps") > 0);
    void* kept[8];
    int k = 0;
    for (int i = 0; i < 10000; ++i) g_spread[i] = malloc(1000);
    for (int i = 0; i < 10000; ++i) {
        if (i % 2000 == 0)
            kept[k++] = g_spread[i];
        else
            free(g_spread[i]);
    }
    zmm_request_end();
    CHECK(zmm_request_begin("after") > 0);
    CHECK(zmm_memory_usage(1) <= 2 * k_mib);  // (one empty chunk of the first request's, at most)
    CHECK(zmm_set_memory_limit(4 * k_mib) == 0);
    void* p = malloc(k_mib);
    CHECK(p != nullptr);
    free(p);
    zmm_request_end();
    for (int i = 0; i < k; ++i) free(kept[i]);
    printf(g_failures ? "failed\n" : "ok\n");
    return g_failures ? 1 : 0;
}

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "";
    const char* kind = argc > 2 ? argv[2] : "large";
    if (strcmp(mode, "fatal-api") == 0) return fatal(true, kind);
    if (strcmp(mode, "fatal-env") == 0) return fatal(false, kind);
    if (strcmp(mode, "enomem") == 0) return enomem();
    if (strcmp(mode, "handler") == 0) return handler();
    if (strcmp(mode, "spread") == 0) return spread();
    fprintf(stderr, "usage: limit fatal-api|fatal-env [large|huge] | enomem | handler\n");
    return 2;
}
