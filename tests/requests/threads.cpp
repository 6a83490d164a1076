// Concurrent requests on 4 threads with cross-thread frees (tests/requests).
//
// Each of 4 threads runs kRounds requests at the same time as the others.
// In every round each thread, inside its request, allocates blocks of mixed
// sizes (small, large, now and then huge), then -- all threads' requests
// still open -- frees half of its neighbour's blocks (remote frees into the
// neighbour's request heap) and half of its own. In some rounds a thread also
// leaks a known number of blocks, from its own call site; after the round
// another thread frees them (by then they belong to the leaking thread's
// heap). zmm_request_end must return exactly the planted leaks.
//
// stdout: one line per leaky request, "leaky NAME N", then "ok" (or "FAIL").
#include <zmm/zmm.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

#define NOINLINE __attribute__((noinline))

namespace {

constexpr int kThreads = 4;
constexpr int kRounds = 60;
constexpr int kBlocks = 400;

struct Slot {
    unsigned char* block;
    size_t size;
};

Slot g_blocks[kThreads][kBlocks];
void* g_leaks[kThreads][8];
int g_leak_count[kThreads];
pthread_barrier_t g_barrier;
std::atomic<int> g_failures{0};
long g_results[kThreads][kRounds];

// How many blocks thread t leaks in round r.
int planted(int t, int r) { return r % 5 == t ? t + 1 : 0; }

size_t size_for(uint64_t& x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    switch (x % 32) {
    case 0: return (size_t{2} << 20) + x % 100000;  // huge
    case 1: case 2: case 3: return 3073 + (x >> 8) % 200000;  // large
    default: return 1 + (x >> 8) % 3072;  // small
    }
}

NOINLINE void leak_from_thread(int t, int n) {
    for (int i = 0; i < n; ++i) {
        void* p = malloc(100 + static_cast<size_t>(t));
        memset(p, t, 100);
        g_leaks[t][g_leak_count[t]++] = p;
    }
}

void check_block(const Slot& s, int owner, int i) {
    unsigned char want = static_cast<unsigned char>(owner * 64 + i);
    if (s.block[0] != want || s.block[s.size - 1] != want) {
        printf("FAIL block %d of thread %d overwritten\n", i, owner);
        ++g_failures;
    }
}

void* run(void* arg) {
    int t = static_cast<int>(reinterpret_cast<intptr_t>(arg));
    int neighbour = (t + 1) % kThreads;
    uint64_t x = 0x9e3779b97f4a7c15u * static_cast<uint64_t>(t + 1);
    for (int r = 0; r < kRounds; ++r) {
        char name[32];
        snprintf(name, sizeof name, "t%d r%d", t, r);
        if (zmm_request_begin(name) <= 0) {
            printf("FAIL zmm_request_begin on thread %d\n", t);
            ++g_failures;
        }
        for (int i = 0; i < kBlocks; ++i) {
            size_t size = size_for(x);
            auto* p = static_cast<unsigned char*>(malloc(size));
            if (!p) abort();
            p[0] = p[size - 1] = static_cast<unsigned char>(t * 64 + i);
            g_blocks[t][i] = Slot{p, size};
        }
        pthread_barrier_wait(&g_barrier);  // every thread's blocks are there
        for (int i = 0; i < kBlocks; ++i) {
            int owner = i % 2 ? neighbour : t;  // odd: the neighbour's, even: mine
            Slot& s = g_blocks[owner][i];
            check_block(s, owner, i);
            free(s.block);
        }
        leak_from_thread(t, planted(t, r));
        pthread_barrier_wait(&g_barrier);  // every cross-thread free is done
        g_results[t][r] = zmm_request_end();
        pthread_barrier_wait(&g_barrier);  // every request of the round ended
        // Free the leaks of the thread two away (now in its heap).
        int other = (t + 2) % kThreads;
        for (int i = 0; i < g_leak_count[other]; ++i) {
            if (static_cast<unsigned char*>(g_leaks[other][i])[99] != other) {
                printf("FAIL leaked block of thread %d overwritten\n", other);
                ++g_failures;
            }
            free(g_leaks[other][i]);
        }
        g_leak_count[other] = 0;
        pthread_barrier_wait(&g_barrier);
    }
    return nullptr;
}

}  // namespace

int main() {
    printf("threads test\n");
    fflush(stdout);
    pthread_barrier_init(&g_barrier, nullptr, kThreads);
    pthread_t threads[kThreads];
    for (int t = 0; t < kThreads; ++t)
        pthread_create(&threads[t], nullptr, run, reinterpret_cast<void*>(static_cast<intptr_t>(t)));
    for (int t = 0; t < kThreads; ++t) pthread_join(threads[t], nullptr);
    for (int r = 0; r < kRounds; ++r)
        for (int t = 0; t < kThreads; ++t) {
            if (g_results[t][r] != planted(t, r)) {
                printf("FAIL t%d r%d: zmm_request_end returned %ld, planted %d\n", t, r, g_results[t][r],
                       planted(t, r));
                ++g_failures;
            }
            if (planted(t, r)) printf("leaky t%d r%d %d\n", t, r, planted(t, r));
        }
    printf(g_failures ? "FAIL\n" : "ok\n");
    return g_failures ? 1 : 0;
}
