// Threads allocating every kind of block and freeing each other's.
//
// kThreads threads, kIterations each. Every iteration allocates one block
// (small 1..3072 B most of the time, large 4 KiB..1.9 MiB sometimes, huge
// 3..8 MiB rarely), by one of several APIs (malloc, calloc, posix_memalign,
// aligned_alloc, new[], aligned new), and fills it with a pattern computed
// from (owner thread, sequence number, size). Half of the blocks are handed to
// another thread through its mutex-protected mailbox; that thread checks the
// pattern (sometimes reallocs the block first: a realloc of another heap's
// block) and frees it: a cross-thread ("remote") free. The other half stays in
// a small local ring, checked and freed by the owner when the slot is reused.
// Mailboxes are capped in bytes, so memory stays bounded.
//
// Any damaged byte, misaligned block or failed allocation ends the program
// with status 1 and a message naming the block.
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <mutex>
#include <new>
#include <thread>
#include <unistd.h>
#include <vector>

#include "on_zmm.h"

namespace {

constexpr int kThreads = 4;
constexpr int kIterations = 10000;
constexpr int kLocalSlots = 48;
constexpr size_t kMailboxBytes = 24u << 20;
constexpr size_t KiB = 1024, MiB = 1024 * 1024;

enum Kind : uint8_t { k_malloc, k_calloc, k_posix_memalign, k_aligned_alloc, k_new_array, k_new_aligned, k_kinds };
const char* const k_kind_name[] = {"malloc", "calloc", "posix_memalign", "aligned_alloc", "new[]", "new(align)"};

struct Item {
    unsigned char* p;
    size_t size;
    uint64_t key;  // the pattern's seed: owner, sequence, size
    int owner;
    Kind kind;
};

[[noreturn]] void die(const char* fmt, const Item& it, size_t extra) {
    char msg[256];
    std::snprintf(msg, sizeof msg, fmt, extra);
    std::fprintf(stderr,
                 "stress_threads: FAIL: %s (block %p, %zu bytes, kind %s, allocated by thread %d, key %016" PRIx64 ")\n",
                 msg, static_cast<void*>(it.p), it.size, k_kind_name[it.kind], it.owner, it.key);
    std::_Exit(1);
}

uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct Rng {
    uint64_t s;
    uint64_t next() { return s = mix(s + 0x9e3779b97f4a7c15ull); }
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

// word i of a block holds key ^ (i * odd); the tail bytes those of the next word
void fill(unsigned char* p, size_t n, uint64_t key) {
    size_t words = n / 8;
    for (size_t i = 0; i < words; ++i) {
        uint64_t w = key ^ (i * 0x9e3779b97f4a7c15ull);
        std::memcpy(p + i * 8, &w, 8);
    }
    uint64_t w = key ^ (words * 0x9e3779b97f4a7c15ull);
    std::memcpy(p + words * 8, &w, n % 8);
}

// the offset of the first wrong byte among the first n, or SIZE_MAX
size_t check(const unsigned char* p, size_t n, uint64_t key) {
    size_t words = n / 8;
    for (size_t i = 0; i < words; ++i) {
        uint64_t w;
        std::memcpy(&w, p + i * 8, 8);
        if (w != (key ^ (i * 0x9e3779b97f4a7c15ull))) return i * 8;
    }
    uint64_t w = key ^ (words * 0x9e3779b97f4a7c15ull);
    if (n % 8 && std::memcmp(p + words * 8, &w, n % 8) != 0) return words * 8;
    return SIZE_MAX;
}

size_t pick_size(Rng& r) {
    size_t x = r.below(1000);
    if (x < 500) return 1 + r.below(256);
    if (x < 900) return 1 + r.below(3072);
    if (x < 996) {
        size_t base = 4 * KiB << r.below(9);  // 4 KiB .. 1 MiB
        size_t n = base + r.below(base);
        return n > 1900 * KiB ? 1900 * KiB : n;
    }
    return 3 * MiB + r.below(5 * MiB);
}

size_t alignment_of(Kind k) {
    switch (k) {
    case k_posix_memalign: return 64;
    case k_aligned_alloc: return 4096;
    case k_new_aligned: return 256;
    default: return 16;
    }
}

Item allocate(int self, uint64_t seq, Rng& r) {
    Item it{};
    it.size = pick_size(r);
    it.owner = self;
    it.kind = static_cast<Kind>(r.below(k_kinds));
    it.key = mix((uint64_t(self) << 56) ^ (seq << 24) ^ it.size);
    void* p = nullptr;
    switch (it.kind) {
    case k_malloc: p = std::malloc(it.size); break;
    case k_calloc: {
        p = std::calloc(1, it.size);
        if (p) {
            // calloc'd memory is zero, whoever used it before
            const unsigned char* b = static_cast<unsigned char*>(p);
            for (size_t i = 0; i < it.size; i += (i < 4096 ? 1 : 509))
                if (b[i] != 0) {
                    it.p = static_cast<unsigned char*>(p);
                    die("calloc'd byte %zu is not zero", it, i);
                }
        }
        break;
    }
    case k_posix_memalign:
        if (posix_memalign(&p, 64, it.size) != 0) p = nullptr;
        break;
    case k_aligned_alloc: p = aligned_alloc(4096, it.size); break;
    case k_new_array: p = new (std::nothrow) unsigned char[it.size]; break;
    case k_new_aligned: p = ::operator new(it.size, std::align_val_t{256}, std::nothrow); break;
    default: break;
    }
    it.p = static_cast<unsigned char*>(p);
    if (!p) die("allocation of %zu bytes failed", it, it.size);
    if (reinterpret_cast<uintptr_t>(p) % alignment_of(it.kind) != 0) die("not %zu-aligned", it, alignment_of(it.kind));
    fill(it.p, it.size, it.key);
    return it;
}

void release(const Item& it) {
    size_t bad = check(it.p, it.size, it.key);
    if (bad != SIZE_MAX) die("pattern damaged at offset %zu", it, bad);
    size_t usable = malloc_usable_size(it.p);
    if (usable < it.size) die("malloc_usable_size is %zu", it, usable);
    switch (it.kind) {
    case k_new_array: delete[] it.p; break;
    case k_new_aligned: ::operator delete(it.p, it.size, std::align_val_t{256}); break;
    default: std::free(it.p); break;
    }
}

struct alignas(64) Mailbox {
    std::mutex lock;
    std::vector<Item> items;
    size_t bytes = 0;
};

Mailbox g_mailbox[kThreads];
std::atomic<int> g_done{0};
std::atomic<uint64_t> g_allocated{0}, g_freed_local{0}, g_freed_remote{0}, g_realloced_remote{0}, g_bytes{0};

// Takes the mailbox's blocks, checks them and frees them (some after a realloc).
size_t drain(int self, Rng& r) {
    std::vector<Item> got;
    {
        std::lock_guard<std::mutex> g(g_mailbox[self].lock);
        got.swap(g_mailbox[self].items);
        g_mailbox[self].bytes = 0;
    }
    for (Item& it : got) {
        if ((it.kind == k_malloc || it.kind == k_calloc) && r.below(4) == 0) {
            // realloc of a block another thread's heap owns: grow or shrink
            size_t bad = check(it.p, it.size, it.key);
            if (bad != SIZE_MAX) die("pattern damaged before realloc at offset %zu", it, bad);
            size_t n = r.below(2) ? it.size + 1 + r.below(it.size < 4096 ? 4096 : it.size) : 1 + r.below(it.size);
            auto* q = static_cast<unsigned char*>(std::realloc(it.p, n));
            if (!q) die("realloc to %zu bytes failed", it, n);
            size_t keep = n < it.size ? n : it.size;
            it.p = q;
            bad = check(q, keep, it.key);
            if (bad != SIZE_MAX) die("realloc lost the content at offset %zu", it, bad);
            it.size = n;
            fill(q, n, it.key);
            g_realloced_remote.fetch_add(1, std::memory_order_relaxed);
        }
        release(it);
    }
    g_freed_remote.fetch_add(got.size(), std::memory_order_relaxed);
    return got.size();
}

void worker(int self) {
    // One generator for what this thread allocates and sends (the same blocks
    // every run), one for what it does with the blocks it receives.
    Rng r{mix(0x5eed0000u + static_cast<uint64_t>(self))};
    Rng rd{mix(0xd4a10000u + static_cast<uint64_t>(self))};
    Item local[kLocalSlots] = {};
    uint64_t allocated = 0, freed_local = 0, bytes = 0;
    for (int i = 0; i < kIterations; ++i) {
        Item it = allocate(self, static_cast<uint64_t>(i), r);
        ++allocated;
        bytes += it.size;
        bool sent = false;
        if (r.below(2)) {
            int target = (self + 1 + static_cast<int>(r.below(kThreads - 1))) % kThreads;
            std::lock_guard<std::mutex> g(g_mailbox[target].lock);
            if (g_mailbox[target].bytes + it.size <= kMailboxBytes) {
                g_mailbox[target].items.push_back(it);
                g_mailbox[target].bytes += it.size;
                sent = true;
            }
        }
        if (!sent) {
            Item& slot = local[r.below(kLocalSlots)];
            if (slot.p) {
                release(slot);
                ++freed_local;
            }
            slot = it;
        }
        if (i % 8 == 0) drain(self, rd);
    }
    for (Item& slot : local)
        if (slot.p) {
            release(slot);
            ++freed_local;
        }
    g_allocated.fetch_add(allocated);
    g_freed_local.fetch_add(freed_local);
    g_bytes.fetch_add(bytes);
    // Keep taking blocks until every thread has stopped sending.
    g_done.fetch_add(1);
    while (g_done.load() < kThreads) {
        if (drain(self, rd) == 0) std::this_thread::yield();
    }
    drain(self, rd);
}

}  // namespace

int main() {
    int zmm = on_zmm_check("stress_threads", "malloc", reinterpret_cast<const void*>(&malloc));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
    for (auto& t : threads) t.join();
    for (int t = 0; t < kThreads; ++t)
        if (!g_mailbox[t].items.empty()) {
            std::fprintf(stderr, "stress_threads: FAIL: mailbox %d still holds %zu blocks\n", t,
                         g_mailbox[t].items.size());
            return 1;
        }
    uint64_t allocated = g_allocated, local = g_freed_local, remote = g_freed_remote;
    std::fprintf(stderr,
                 "stress_threads: %d threads, %" PRIu64 " blocks (%" PRIu64 " MiB) allocated, %" PRIu64
                 " freed by their owner, %" PRIu64 " freed by another thread (%" PRIu64 " realloc'd there) (%s)\n",
                 kThreads, allocated, g_bytes.load() >> 20, local, remote, g_realloced_remote.load(),
                 zmm ? "zmm" : "not zmm");
    if (allocated != local + remote) {
        std::fprintf(stderr, "stress_threads: FAIL: %" PRIu64 " allocated but %" PRIu64 " freed\n", allocated,
                     local + remote);
        return 1;
    }
    if (remote < allocated / 4) {
        std::fprintf(stderr, "stress_threads: FAIL: only %" PRIu64 " cross-thread frees\n", remote);
        return 1;
    }
    std::fprintf(stderr, "stress_threads: passed\n");
    return 0;
}
