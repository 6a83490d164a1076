// fork() while other threads allocate: the child must get consistent heaps.
//
// kWorkers threads allocate, check and free blocks of every kind in a loop,
// swapping them through a shared table of slots (so blocks are freed by
// threads other than their owner). Meanwhile the process forks kForks times:
// mostly from the main thread, sometimes from a helper thread that has its own
// heap, sometimes from a brand-new thread that never allocated. Each child:
//   - arms alarm(): a deadlock in the allocator becomes SIGALRM, a failure;
//   - allocates and frees at once (small, large, huge);
//   - starts a thread that allocates and frees, and frees some inherited
//     blocks, and joins it;
//   - checks and frees blocks inherited from the parent: the forking thread's
//     own, and blocks of the worker threads, which do not exist in the child;
//   - now and then forks again (a grandchild does the same, more briefly);
//   - _exit(0).
// The parent waits for every child and requires exit status 0.
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "on_zmm.h"

namespace {

constexpr int kWorkers = 3;
constexpr int kForks = 50;
constexpr int kSlots = 256;
constexpr int kInherited = 64;
constexpr unsigned kChildAlarm = 10;  // seconds
constexpr size_t KiB = 1024, MiB = 1024 * 1024;

// Async-signal-safe message (the child must not rely on stdio's state).
void say(const char* a, const char* b = "", const char* c = "") {
    char buf[512];
    size_t n = 0;
    for (const char* s : {a, b, c})
        for (; *s && n < sizeof buf - 1; ++s) buf[n++] = *s;
    buf[n++] = '\n';
    ssize_t w = write(2, buf, n);
    (void)w;
}

[[noreturn]] void fail(const char* where, const char* what) {
    say("stress_fork: FAIL: ", where, what);
    _exit(3);
}

uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// A block: header {size, key}, then bytes derived from the key.
struct Header {
    uint64_t size;
    uint64_t key;
};

void* make(size_t size, uint64_t key, const char* where) {
    if (size <= sizeof(Header)) size = sizeof(Header) + 1;
    auto* p = static_cast<unsigned char*>(std::malloc(size));
    if (!p) fail(where, ": malloc failed");
    if (reinterpret_cast<uintptr_t>(p) % 16) fail(where, ": misaligned block");
    Header h{size, key};
    std::memcpy(p, &h, sizeof h);
    for (size_t i = sizeof h; i < size; i += 61) p[i] = static_cast<unsigned char>(key + i);
    p[size - 1] = static_cast<unsigned char>(key >> 16);
    return p;
}

void check_free(void* block, const char* where) {
    auto* p = static_cast<unsigned char*>(block);
    Header h;
    std::memcpy(&h, p, sizeof h);
    if (h.size < sizeof h || h.size > 64 * MiB) fail(where, ": block header damaged");
    for (size_t i = sizeof h; i < h.size; i += 61)
        if (i != h.size - 1 && p[i] != static_cast<unsigned char>(h.key + i)) fail(where, ": block content damaged");
    if (p[h.size - 1] != static_cast<unsigned char>(h.key >> 16)) fail(where, ": block end damaged");
    if (malloc_usable_size(p) < h.size) fail(where, ": usable size too small");
    std::free(p);
}

size_t pick_size(uint64_t& s) {
    s = mix(s);
    unsigned x = static_cast<unsigned>(s % 1000);
    if (x < 850) return 16 + (s >> 12) % 3072;
    if (x < 995) return 4 * KiB + (s >> 12) % (512 * KiB);
    return 3 * MiB + (s >> 12) % (2 * MiB);
}

std::atomic<void*> g_slots[kSlots];
std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_worker_ops{0};
void* g_inherited[kInherited];  // the main thread's, made before the forks

void* worker(void* arg) {
    uint64_t s = mix(reinterpret_cast<uintptr_t>(arg) + 1);
    uint64_t ops = 0;
    void* own[16] = {};
    while (!g_stop.load(std::memory_order_relaxed)) {
        uint64_t key = mix(s ^ ops);
        void* p = make(pick_size(s), key, "worker");
        // swap it into a shared slot; whatever was there (another thread's) is freed here
        void* old = g_slots[key % kSlots].exchange(p, std::memory_order_acq_rel);
        if (old) check_free(old, "worker (slot)");
        // and some churn of its own
        void*& mine = own[(key >> 8) % 16];
        if (mine) check_free(mine, "worker (own)");
        mine = make(pick_size(s), key >> 3, "worker");
        ++ops;
    }
    for (void* p : own)
        if (p) check_free(p, "worker (own, at end)");
    g_worker_ops.fetch_add(ops);
    return nullptr;
}

void* child_thread(void* arg) {
    uint64_t s = mix(reinterpret_cast<uintptr_t>(arg) ^ 0xc41d);
    void* keep[32];
    for (int round = 0; round < 4; ++round) {
        for (void*& p : keep) p = make(pick_size(s), s, "child thread");
        for (void* p : keep) check_free(p, "child thread");
    }
    // inherited blocks of the parent's workers, freed from a thread the parent never had
    for (int i = 0; i < kSlots; i += 4)
        if (void* p = g_slots[i].exchange(nullptr)) check_free(p, "child thread (inherited slot)");
    return nullptr;
}

// Everything a child does. `depth` 0: a child of the test; 1: a grandchild.
[[noreturn]] void child(int n, int depth) {
    alarm(kChildAlarm);
    const char* where = depth ? "grandchild" : "child";
    // allocate at once, every kind
    const size_t sizes[] = {1, 24, 100, 3072, 3073, 64 * KiB, 2 * MiB - 4 * KiB, 5 * MiB};
    for (size_t sz : sizes) check_free(make(sz, sz * 7 + static_cast<size_t>(n), where), where);
    void* a = nullptr;
    if (posix_memalign(&a, 4096, 10000) != 0 || reinterpret_cast<uintptr_t>(a) % 4096) fail(where, ": posix_memalign");
    std::free(a);
    void* r = std::malloc(100);
    if (!r) fail(where, ": malloc");
    for (size_t sz = 200; sz < 3 * MiB; sz *= 3) {
        r = std::realloc(r, sz);
        if (!r) fail(where, ": realloc");
        std::memset(r, 1, sz);
    }
    std::free(r);

    // a new thread, allocating
    pthread_t t;
    if (pthread_create(&t, nullptr, child_thread, reinterpret_cast<void*>(static_cast<uintptr_t>(n))) != 0)
        fail(where, ": pthread_create");
    if (pthread_join(t, nullptr) != 0) fail(where, ": pthread_join");

    if (depth == 0 && n % 10 == 3) {
        // a grandchild, forked from the child
        pid_t g = fork();
        if (g < 0) fail(where, ": fork of a grandchild");
        if (g == 0) child(n, 1);
        int st = 0;
        if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) fail(where, ": the grandchild failed");
    }

    // the parent's blocks: the main thread's and the workers'
    for (void* p : g_inherited)
        if (p) check_free(p, "child (inherited from main)");
    for (auto& slot : g_slots)
        if (void* p = slot.exchange(nullptr)) check_free(p, "child (inherited slot)");
    // and the allocator still works after all that
    check_free(make(1000, 1, where), where);
    _exit(0);
}

// The parent side of one fork: returns the child's pid.
pid_t fork_one(int n) {
    pid_t pid = fork();
    if (pid < 0) {
        std::perror("stress_fork: fork");
        std::exit(1);
    }
    if (pid == 0) child(n, 0);
    return pid;
}

struct Fork_request {
    int n;
    pid_t pid;
    bool allocate_first;
};

void* forking_thread(void* arg) {
    auto* req = static_cast<Fork_request*>(arg);
    void* mine = nullptr;
    if (req->allocate_first) mine = make(5000, 3, "forking thread");  // a thread with a heap of its own
    req->pid = fork_one(req->n);
    if (mine) check_free(mine, "forking thread");
    return nullptr;
}

const char* describe(int st, char* buf, size_t n) {
    if (WIFEXITED(st))
        std::snprintf(buf, n, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        std::snprintf(buf, n, "killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                      WTERMSIG(st) == SIGALRM ? ": the child hung (deadlock after fork?)" : "");
    else
        std::snprintf(buf, n, "status 0x%x", st);
    return buf;
}

}  // namespace

int main() {
    int zmm = on_zmm_check("stress_fork", "malloc", reinterpret_cast<const void*>(&malloc));
    uint64_t s = 99;
    for (void*& p : g_inherited) p = make(pick_size(s), s, "main");
    pthread_t workers[kWorkers];
    for (int i = 0; i < kWorkers; ++i)
        if (pthread_create(&workers[i], nullptr, worker, reinterpret_cast<void*>(static_cast<uintptr_t>(i))) != 0) {
            std::fprintf(stderr, "stress_fork: FAIL: pthread_create\n");
            return 1;
        }
    int failures = 0;
    int from_main = 0, from_thread = 0, from_new_thread = 0;
    for (int n = 0; n < kForks; ++n) {
        // let the workers run a little between forks
        for (int k = 0; k < 20; ++k) check_free(make(pick_size(s), s, "main"), "main");
        usleep(2000);
        pid_t pid;
        if (n % 5 == 1 || n % 5 == 3) {
            Fork_request req{n, -1, n % 5 == 1};
            pthread_t t;
            if (pthread_create(&t, nullptr, forking_thread, &req) != 0 || pthread_join(t, nullptr) != 0) {
                std::fprintf(stderr, "stress_fork: FAIL: forking thread\n");
                return 1;
            }
            pid = req.pid;
            ++(req.allocate_first ? from_thread : from_new_thread);
        } else {
            pid = fork_one(n);
            ++from_main;
        }
        int st = 0;
        pid_t w;
        do {
            w = waitpid(pid, &st, 0);
        } while (w < 0 && errno == EINTR);
        if (w != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            char buf[160];
            std::fprintf(stderr, "stress_fork: FAIL: child %d (pid %d): %s\n", n, static_cast<int>(pid),
                         w != pid ? "waitpid failed" : describe(st, buf, sizeof buf));
            ++failures;
        }
    }
    g_stop = true;
    for (auto& t : workers) pthread_join(t, nullptr);
    for (auto& slot : g_slots)
        if (void* p = slot.exchange(nullptr)) check_free(p, "main (slot, at end)");
    for (void* p : g_inherited) check_free(p, "main (at end)");
    std::fprintf(stderr,
                 "stress_fork: %d forks (%d from main, %d from a thread with a heap, %d from a new thread), "
                 "%d failed; workers did %" PRIu64 " operations (%s)\n",
                 kForks, from_main, from_thread, from_new_thread, failures, g_worker_ops.load(),
                 zmm ? "zmm" : "not zmm");
    if (failures) return 1;
    std::fprintf(stderr, "stress_fork: passed\n");
    return 0;
}
