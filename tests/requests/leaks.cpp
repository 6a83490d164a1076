// Planted leaks inside an API request (tests/requests, driven by check.py).
//
// One request, "planted", leaks exactly these blocks, each from its own
// noinline function so that the report's backtrace must name it:
//   planted::leak_malloc     malloc(100)
//   planted::leak_new_array  new char[333]
//   planted::leak_calloc     calloc(7, 11)
//   planted::leak_realloc    malloc(16) grown by realloc to 40, 900 and 5000
//   planted::leak_huge       malloc(3 MiB + 123)
//   planted::leak_loop       malloc(48) three times from one call site (one group of 3)
//   planted::deep12          malloc(2024), 12 frames deep (deep01 -> ... -> deep12)
// Around them the request runs a large workload that frees everything it
// allocates, and a thread, created and joined inside the request, frees a
// block the request allocated (a cross-thread free). A block allocated before
// the request (persistent) stays live across it and must not be reported.
// After the request, a second request ("clean") allocates and frees only: it
// must print nothing; its span on stderr is marked with write(2) lines.
//
// stdout (written after the requests, for the driver): the return values of
// zmm_request_end and the planted blocks, one line per planted function:
//   plant FUNCTION SIZE ADDRESS...
#include <zmm/zmm.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <new>
#include <string>
#include <vector>

#define NOINLINE __attribute__((noinline))

namespace {

struct Plant {
    const char* function;
    size_t size;
    // Hidden (xor'd) while the request is open: the blocks must be lost, not
    // reachable from this global, for ZMM_LEAKS=lost (the default) to list them.
    uintptr_t blocks[3];
    int count;
};

constexpr uintptr_t k_hide = 0x5a5a5a5a5a5a5a5aull;
void* shown(uintptr_t hidden) { return reinterpret_cast<void*>(hidden ^ k_hide); }

Plant g_plants[16];
int g_plant_count = 0;

// Stores the planted block (nothing is printed while the request is open:
// stdio must not allocate inside it).
void plant(const char* function, size_t size, void* block) {
    for (int i = 0; i < g_plant_count; ++i)
        if (strcmp(g_plants[i].function, function) == 0) {
            g_plants[i].blocks[g_plants[i].count++] = reinterpret_cast<uintptr_t>(block) ^ k_hide;
            return;
        }
    g_plants[g_plant_count++] = Plant{function, size, {reinterpret_cast<uintptr_t>(block) ^ k_hide, 0, 0}, 1};
}

// Planted blocks are cleared: stale words in a reused slot could otherwise
// point at another planted block and make it "indirectly lost".
void* cleared(void* p, size_t size) {
    memset(p, 0, size);
    return p;
}

void mark(const char* line) {
    // write(2): no stdio buffer, no allocation, ordered with zmm's reports
    ssize_t r = write(2, line, strlen(line));
    (void)r;
}

}  // namespace

namespace planted {

NOINLINE void leak_malloc() { plant("planted::leak_malloc", 100, cleared(malloc(100), 100)); }

NOINLINE void leak_new_array() { plant("planted::leak_new_array", 333, cleared(new char[333], 333)); }

NOINLINE void leak_calloc() { plant("planted::leak_calloc", 77, calloc(7, 11)); }

NOINLINE void leak_realloc() {
    char* p = static_cast<char*>(malloc(16));
    memset(p, 'a', 16);
    p = static_cast<char*>(realloc(p, 40));
    p = static_cast<char*>(realloc(p, 900));
    p = static_cast<char*>(realloc(p, 5000));
    if (p[15] != 'a') abort();
    memset(p + 16, 0, 5000 - 16);
    plant("planted::leak_realloc", 5000, p);
}

NOINLINE void leak_huge() {
    size_t size = (size_t{3} << 20) + 123;
    char* p = static_cast<char*>(malloc(size));
    memset(p, 0, size);
    p[0] = p[size - 1] = 1;
    plant("planted::leak_huge", size, p);
}

NOINLINE void leak_loop() {
    static void* volatile slots[3];
#pragma GCC unroll 1
    for (int i = 0; i < 3; ++i) slots[i] = malloc(48);
    for (int i = 0; i < 3; ++i) {
        plant("planted::leak_loop", 48, cleared(slots[i], 48));
        slots[i] = nullptr;  // lost now
    }
}

// Twelve distinct frames: deep01 calls deep02 ... calls deep12, which leaks.
// Each does work after its call, so no call is a tail call.
volatile int g_depth_sink;
#define DEEP(n, next)                         \
    NOINLINE void deep##n(int x) {            \
        next(x + 1);                          \
        g_depth_sink = g_depth_sink + x;      \
    }
NOINLINE void deep12(int x) {
    plant("planted::deep12", 2024, cleared(malloc(2024), 2024));
    g_depth_sink = x;
}
DEEP(11, deep12)
DEEP(10, deep11)
DEEP(09, deep10)
DEEP(08, deep09)
DEEP(07, deep08)
DEEP(06, deep07)
DEEP(05, deep06)
DEEP(04, deep05)
DEEP(03, deep04)
DEEP(02, deep03)
DEEP(01, deep02)

}  // namespace planted

namespace {

// Thousands of allocations of mixed sizes (small, large, huge, aligned,
// calloc, realloc chains, C++ containers), every one freed.
NOINLINE uint64_t workload(unsigned rounds) {
    uint64_t x = 88172645463325252u, sum = 0;
    auto next = [&] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    constexpr unsigned k_live = 512;
    void* live[k_live] = {};
    size_t sizes[k_live] = {};
    for (unsigned i = 0; i < rounds; ++i) {
        unsigned slot = static_cast<unsigned>(next() % k_live);
        if (live[slot]) {
            sum += static_cast<unsigned char*>(live[slot])[0];
            if (next() % 4 == 0 && sizes[slot] < (size_t{1} << 20)) {
                size_t grow = sizes[slot] * 2 + 1;
                void* p = realloc(live[slot], grow);
                if (!p) abort();
                live[slot] = p;
                sizes[slot] = grow;
                continue;
            }
            free(live[slot]);
            live[slot] = nullptr;
        }
        uint64_t r = next();
        size_t size;
        switch (r % 16) {
        case 0: size = 3073 + r % 60000; break;            // large
        case 1: size = 70000 + r % 400000; break;          // large, many pages
        default: size = 1 + (r >> 8) % 3072; break;        // small
        }
        if (i % 997 == 0) size = (size_t{2} << 20) + (r % 100000);  // huge
        void* p;
        if (r % 7 == 0) {
            p = calloc(1, size);
        } else if (r % 11 == 0) {
            if (posix_memalign(&p, 64, size)) p = nullptr;
        } else {
            p = malloc(size);
        }
        if (!p) abort();
        memset(p, static_cast<int>(i), size < 64 ? size : 64);
        live[slot] = p;
        sizes[slot] = size;
    }
    for (unsigned i = 0; i < k_live; ++i) free(live[i]);
    // C++: containers and new/delete
    for (unsigned i = 0; i < 200; ++i) {
        std::vector<std::string> v;
        for (unsigned j = 0; j < 20; ++j) v.emplace_back(std::string(j * 7 + 20, 'x'));
        sum += v.back().size();
        int* a = new int[i + 1];
        a[i] = 1;
        sum += a[i];
        delete[] a;
        auto* s = new std::string("a string long enough to be on the heap, really");
        sum += s->size();
        delete s;
    }
    return sum;
}

void* thread_free(void* block) {
    free(block);                 // a block of the main thread's request
    return malloc(64);           // this thread's own (persistent) block
}

volatile uint64_t g_sum;

}  // namespace

int main() {
    // Before the request: the first printf (stdout's buffer), and a
    // persistent block that lives across the request.
    printf("pid %d\n", static_cast<int>(getpid()));
    fflush(stdout);
    char* persistent = static_cast<char*>(malloc(4321));
    memset(persistent, 'p', 4321);

    int id = zmm_request_begin("planted");
    if (id <= 0) {
        fprintf(stderr, "leaks: zmm_request_begin failed (%d): not running on zmm?\n", id);
        return 2;
    }
    if (zmm_request_begin("nested") != -1) {
        fprintf(stderr, "leaks: a begin inside an open request must return -1\n");
        return 2;
    }
    g_sum = workload(20000);
    planted::leak_malloc();
    planted::leak_new_array();
    g_sum = workload(3000);
    planted::leak_calloc();
    planted::leak_realloc();
    planted::leak_huge();
    planted::leak_loop();
    planted::deep01(0);

    // A block freed by another thread, created and joined inside the request.
    void* handed = malloc(200);
    pthread_t t;
    if (pthread_create(&t, nullptr, thread_free, handed) != 0) return 2;
    void* from_thread = nullptr;
    pthread_join(t, &from_thread);
    free(from_thread);           // the thread's persistent block, freed here
    g_sum = workload(3000);

    long leaked = zmm_request_end();
    long again = zmm_request_end();  // no request open: -1

    // The clean request: allocates and frees only; nothing may be printed.
    mark("MARK clean begin\n");
    int clean_id = zmm_request_begin("clean");
    g_sum = workload(5000);
    long clean_leaked = zmm_request_end();
    mark("MARK clean end\n");

    if (persistent[0] != 'p' || persistent[4320] != 'p') return 3;
    free(persistent);

    printf("request %d leaked %ld\n", id, leaked);
    printf("second_end %ld\n", again);
    printf("clean %d leaked %ld\n", clean_id, clean_leaked);
    printf("persistent %p\n", static_cast<void*>(persistent));
    for (int i = 0; i < g_plant_count; ++i) {
        const Plant& p = g_plants[i];
        printf("plant %s %zu", p.function, p.size);
        for (int j = 0; j < p.count; ++j) printf(" %p", shown(p.blocks[j]));
        printf("\n");
    }
    // The planted blocks stay valid after the request (ZMM_RECLAIM=0): free them.
    for (int i = 0; i < g_plant_count; ++i)
        for (int j = 0; j < g_plants[i].count; ++j) {
            if (strcmp(g_plants[i].function, "planted::leak_new_array") == 0)
                delete[] static_cast<char*>(shown(g_plants[i].blocks[j]));
            else
                free(shown(g_plants[i].blocks[j]));
        }
    return 0;
}
