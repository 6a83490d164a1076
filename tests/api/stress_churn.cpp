// Thousands of short-lived threads: heaps of exited threads must be reused.
//
// kThreads threads in batches of kBatch. Each thread
//   - checks and frees the "gifts" the main thread allocated for it (frees into
//     the main thread's heap from another thread),
//   - allocates kBlocks blocks (small mostly, some large, now and then a huge
//     one), fills them with a pattern, frees half of them itself,
//   - leaves the other half behind: the main thread checks and frees them after
//     the join, either at once (into the heap of an exited thread, waiting in
//     the pool) or while the next batch runs (into a heap that a new thread may
//     have adopted),
//   - frees one more block from a C++ thread_local destructor, and allocates
//     and frees from a pthread key destructor, which may run after zmm's own
//     thread-exit hook.
// The process's RSS (and, under zmm, the memory mallinfo2 reports as mapped)
// must stay bounded: if every thread got a fresh heap, thousands of heaps
// would each keep their chunks.
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
#include <vector>

#include "on_zmm.h"

namespace {

constexpr int kThreads = 3000;
constexpr int kBatch = 8;
constexpr int kBlocks = 40;
constexpr int kGifts = 6;
constexpr size_t KiB = 1024, MiB = 1024 * 1024;
constexpr size_t kRssLimit = 512 * MiB;
constexpr size_t kMappedLimit = 512 * MiB;

[[noreturn]] void fail(const char* what, const void* p, size_t size, size_t at) {
    std::fprintf(stderr, "stress_churn: FAIL: %s (block %p, %zu bytes, offset %zu)\n", what, p, size, at);
    std::_Exit(1);
}

uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct Block {
    unsigned char* p = nullptr;
    size_t size = 0;
    uint64_t key = 0;
};

Block make(size_t size, uint64_t key) {
    Block b{static_cast<unsigned char*>(std::malloc(size)), size, key};
    if (!b.p) fail("malloc failed", nullptr, size, 0);
    if (size >= 16 && reinterpret_cast<uintptr_t>(b.p) % 16) fail("misaligned block", b.p, size, 0);
    // one byte per 64 plus both ends: enough to see a block handed out twice
    for (size_t i = 0; i + 1 < size; i += 64) b.p[i] = static_cast<unsigned char>(key + i / 64);
    b.p[size - 1] = static_cast<unsigned char>(key >> 8);
    return b;
}

void check_free(const Block& b) {
    for (size_t i = 0; i + 1 < b.size; i += 64)
        if (b.p[i] != static_cast<unsigned char>(b.key + i / 64)) fail("pattern damaged", b.p, b.size, i);
    if (b.p[b.size - 1] != static_cast<unsigned char>(b.key >> 8)) fail("last byte damaged", b.p, b.size, b.size - 1);
    std::free(b.p);
}

size_t pick_size(uint64_t& s, int thread) {
    s = mix(s);
    unsigned x = static_cast<unsigned>(s % 1000);
    if (x < 800) return 1 + (s >> 10) % 3072;
    if (x < 990) return 16 * KiB + (s >> 10) % (240 * KiB);
    // a huge block in a few threads only: the point is heaps, not mmap
    return thread % 10 == 0 ? 3 * MiB + (s >> 10) % MiB : 100 * KiB;
}

struct Job {
    int index;
    Block gifts[kGifts];
    Block left[kBlocks];  // what the thread leaves behind
    int left_count;
};

// A C++ thread_local whose destructor frees a block: it runs at thread exit.
struct Tls_block {
    Block b;
    ~Tls_block() {
        if (b.p) check_free(b);
    }
};
thread_local Tls_block t_tls_block;

// A pthread key whose destructor allocates and frees. It was created after
// zmm's own key, so glibc calls it after zmm has already given the heap back.
pthread_key_t g_key;
std::atomic<int> g_key_destructors{0};
void key_destructor(void* value) {
    check_free(*static_cast<Block*>(value));
    delete static_cast<Block*>(value);
    Block late = make(200, 0x4c);
    check_free(late);
    g_key_destructors.fetch_add(1, std::memory_order_relaxed);
}

void* thread_main(void* arg) {
    Job* job = static_cast<Job*>(arg);
    uint64_t s = mix(static_cast<uint64_t>(job->index) + 1);
    for (Block& g : job->gifts) {
        check_free(g);
        g = Block{};
    }
    Block mine[kBlocks];
    for (int i = 0; i < kBlocks; ++i) mine[i] = make(pick_size(s, job->index), s ^ static_cast<uint64_t>(i));
    job->left_count = 0;
    for (int i = 0; i < kBlocks; ++i) {
        if (i % 2)
            check_free(mine[i]);
        else
            job->left[job->left_count++] = mine[i];
    }
    t_tls_block.b = make(1 + job->index % 3000, 0x7a);
    pthread_setspecific(g_key, new Block(make(48, 0x6b)));
    return nullptr;
}

size_t rss_bytes(size_t* vm_bytes) {
    FILE* f = std::fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f || std::fscanf(f, "%lu %lu", &size, &resident) != 2) {
        std::fprintf(stderr, "stress_churn: FAIL: cannot read /proc/self/statm\n");
        std::_Exit(1);
    }
    std::fclose(f);
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    if (vm_bytes) *vm_bytes = size * page;
    return resident * page;
}

void free_left(Job& job) {
    for (int i = 0; i < job.left_count; ++i) check_free(job.left[i]);
    job.left_count = 0;
}

}  // namespace

int main() {
    int zmm = on_zmm_check("stress_churn", "malloc", reinterpret_cast<const void*>(&malloc));
    if (pthread_key_create(&g_key, key_destructor) != 0) {
        std::fprintf(stderr, "stress_churn: FAIL: pthread_key_create\n");
        return 1;
    }
    std::vector<Job> jobs(kThreads);
    std::vector<Job*> previous;  // a batch whose leftovers are freed while the next runs
    size_t max_rss = 0, max_vm = 0, max_mapped = 0;
    size_t start_rss = rss_bytes(nullptr);
    uint64_t gift_seed = 12345;
    for (int first = 0; first < kThreads; first += kBatch) {
        pthread_t tids[kBatch];
        int n = first + kBatch <= kThreads ? kBatch : kThreads - first;
        for (int k = 0; k < n; ++k) {
            Job& job = jobs[static_cast<size_t>(first + k)];
            job.index = first + k;
            for (Block& g : job.gifts) g = make(pick_size(gift_seed, 1), gift_seed);
            if (pthread_create(&tids[k], nullptr, thread_main, &job) != 0) {
                std::fprintf(stderr, "stress_churn: FAIL: pthread_create for thread %d\n", first + k);
                return 1;
            }
        }
        // The previous batch's other half, freed while this batch runs.
        for (Job* j : previous) free_left(*j);
        previous.clear();
        for (int k = 0; k < n; ++k) {
            if (pthread_join(tids[k], nullptr) != 0) {
                std::fprintf(stderr, "stress_churn: FAIL: pthread_join\n");
                return 1;
            }
            Job& job = jobs[static_cast<size_t>(first + k)];
            if (k % 2 == 0)
                free_left(job);  // into the heap of a thread that has exited
            else
                previous.push_back(&job);
        }
        size_t vm = 0;
        size_t rss = rss_bytes(&vm);
        if (rss > max_rss) max_rss = rss;
        if (vm > max_vm) max_vm = vm;
        size_t mapped = zmm ? mallinfo2().arena : 0;
        if (mapped > max_mapped) max_mapped = mapped;
        if (rss > kRssLimit || mapped > kMappedLimit) {
            std::fprintf(stderr,
                         "stress_churn: FAIL: after %d threads RSS is %zu MiB (limit %zu), mapped chunks %zu MiB "
                         "(limit %zu): heaps of exited threads are not reused?\n",
                         first + n, rss >> 20, kRssLimit >> 20, mapped >> 20, kMappedLimit >> 20);
            return 1;
        }
    }
    for (Job* j : previous) free_left(*j);
    if (g_key_destructors.load() != kThreads) {
        std::fprintf(stderr, "stress_churn: FAIL: %d key destructors ran, want %d\n", g_key_destructors.load(), kThreads);
        return 1;
    }
    std::fprintf(stderr,
                 "stress_churn: %d threads (%d at a time): RSS %zu MiB at start, at most %zu MiB; VM at most %zu "
                 "MiB; mallinfo2 arena at most %zu MiB (%s)\n",
                 kThreads, kBatch, start_rss >> 20, max_rss >> 20, max_vm >> 20, max_mapped >> 20,
                 zmm ? "zmm" : "not zmm");
    std::fprintf(stderr, "stress_churn: passed\n");
    return 0;
}
