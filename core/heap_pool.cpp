#include "heap_pool.hpp"

#include <atomic>
#include <cstring>

#include "os.hpp"
#include "spin_lock.hpp"

namespace zmm::heap_pool {
namespace {

constinit Spin_lock g_lock;
Heap* g_all = nullptr;   // every heap, by all_next
Heap* g_pool = nullptr;  // abandoned heaps, by pool_next
unsigned g_count = 0;
unsigned g_pooled = 0;  // (written under g_lock; read without it by trim_idle)
uint64_t g_key = 0;

// Heap structures come from mmap'd slabs: they must not come from the heap.
char* g_slab = nullptr;
size_t g_slab_left = 0;

Heap* new_heap_locked() {
    constexpr size_t k_heap_bytes = (sizeof(Heap) + 63) & ~size_t{63};
    if (g_slab_left < k_heap_bytes) {
        constexpr size_t k_slab = 64 * 1024;
        g_slab = static_cast<char*>(os::map(k_slab));
        if (!g_slab) {
            g_slab_left = 0;
            return nullptr;
        }
        g_slab_left = k_slab;
    }
    Heap* h = reinterpret_cast<Heap*>(g_slab);
    g_slab += k_heap_bytes;
    g_slab_left -= k_heap_bytes;
    if (g_key == 0) g_key = os::random_u64();
    h->init(g_key);
    h->all_next = g_all;
    __atomic_store_n(&g_all, h, __ATOMIC_RELEASE);
    ++g_count;
    return h;
}

// A heap that waits in the pool this long gives its memory back (collect:
// free runs, empty chunks, dirty pages, cached huge mappings, and those of
// its retired request heaps; live blocks stay): new threads take the heap
// pooled last, so one deeper in the pool may wait for long, and its memory
// is then of no use to anyone (after a burst of threads, every heap but the
// few taken again). One that waited less is likely taken again soon, its
// memory warm. Looked for when a thread leaves, and from any heap's purge
// check (trim_idle): up to 4 heaps at a time. A heap whose blocks are freed
// while it waits (reclaim_if_abandoned) waits anew.
//
// Under the pool's lock, with every signal blocked (a handler that
// allocates would take the reentry heap's lock, which a fork holds while it
// waits for this one), and not while a leak scan holds the heap's mappings
// (an unmap would wait for it, the pool's lock held; and a handler on the
// scanning thread would wait for itself).
constexpr uint64_t k_idle_ns = 100'000'000;
constexpr size_t k_pooled_dirty_pages = 256;
constexpr unsigned k_pool_depth_looked = 1024;  // heaps looked at, from the one pooled last
std::atomic<uint64_t> g_last_trim_ns{0};

// h becomes `owner`'s, with the request heaps retired into it.
void lend_locked(Heap* h, const void* owner) {
    h->owner.store(owner, std::memory_order_release);
    for (Heap* r = h->retired; r; r = r->retired_next) r->owner.store(owner, std::memory_order_release);
}

// h, owned by nobody now, goes to the pool's head.
void pool_locked(Heap* h, uint64_t now) {
    lend_locked(h, nullptr);
    h->pooled_ns = now;
    h->pool_next = g_pool;
    g_pool = h;
}

bool idle(const Heap* h, uint64_t now) { return h->pooled_ns && now - h->pooled_ns >= k_idle_ns; }

void trim_idle_locked(uint64_t now) {
    g_last_trim_ns.store(now, std::memory_order_relaxed);
    unsigned looked = 0, trimmed = 0;
    for (Heap* h = g_pool; h && looked < k_pool_depth_looked && trimmed < 4; h = h->pool_next, ++looked) {
        if (os::heap_mappings_held()) break;
        if (!idle(h, now)) continue;
        h->collect();
        for (Heap* r = h->retired; r; r = r->retired_next) r->collect();
        h->pooled_ns = 0;
        ++trimmed;
    }
}

// Is any heap that deep in the pool idle? (Read under the lock.)
bool any_idle_locked(uint64_t now) {
    unsigned looked = 0;
    for (Heap* h = g_pool; h && looked < k_pool_depth_looked; h = h->pool_next, ++looked)
        if (idle(h, now)) return true;
    return false;
}

}  // namespace

void trim_idle() {
    if (__atomic_load_n(&g_pooled, __ATOMIC_RELAXED) == 0) return;
    const uint64_t now = os::coarse_monotonic_ns();
    if (now - g_last_trim_ns.load(std::memory_order_relaxed) < k_idle_ns || os::heap_mappings_held()) return;
    os::Signals_blocked quiet;
    if (!g_lock.try_lock()) return;  // (taken: by this thread too, collecting a pooled heap)
    trim_idle_locked(now);
    g_lock.unlock();
}

Heap* all_heaps() { return __atomic_load_n(&g_all, __ATOMIC_ACQUIRE); }

uint64_t free_list_key() {
    Lock_guard guard(g_lock);
    if (g_key == 0) g_key = os::random_u64();
    return g_key;
}

Heap* acquire(const void* owner) {
    Lock_guard guard(g_lock);
    Heap* h = g_pool;
    if (h) {
        g_pool = h->pool_next;
        h->pool_next = nullptr;
        __atomic_store_n(&g_pooled, g_pooled - 1, __ATOMIC_RELAXED);
    } else {
        h = new_heap_locked();
        if (!h) return nullptr;
        h->takes_chains = g_tuning.batch_remote_frees;
    }
    lend_locked(h, owner);
    return h;
}

bool exchange(Heap* mine, Heap* wanted, const void* owner) {
    mine->flush_outbox();
    mine->drain_remote();
    Lock_guard guard(g_lock);
    if (wanted->owner.load(std::memory_order_relaxed) != nullptr) return false;
    Heap** link = &g_pool;
    for (unsigned looked = 0; *link && *link != wanted && looked < k_pool_depth_looked; ++looked)
        link = &(*link)->pool_next;
    if (*link != wanted) return false;  // (an unowned heap not pooled: a retired request heap's)
    *link = wanted->pool_next;
    wanted->pool_next = nullptr;
    lend_locked(wanted, owner);
    pool_locked(mine, os::coarse_monotonic_ns());
    return true;
}

Heap* new_request_heap(const void* owner) {
    Lock_guard guard(g_lock);
    Heap* h = new_heap_locked();
    if (h) h->owner.store(owner, std::memory_order_release);
    return h;
}

void abandon(Heap* heap) {
    heap->flush_outbox();
    heap->drain_remote();
    const uint64_t now = os::coarse_monotonic_ns();
    bool trim;
    {
        Lock_guard guard(g_lock);
        pool_locked(heap, now);
        __atomic_store_n(&g_pooled, g_pooled + 1, __ATOMIC_RELAXED);
        trim = any_idle_locked(now);
    }
    if (trim && !os::heap_mappings_held()) {
        os::Signals_blocked quiet;
        Lock_guard guard(g_lock);
        trim_idle_locked(now);
    }
}

void reclaim_if_abandoned(Heap* heap, const void* current_owner) {
    if (heap->owner.load(std::memory_order_relaxed) != nullptr) return;
    if (!g_lock.try_lock()) return;
    // Still unowned under the lock: borrow it, drain, give it back.
    if (heap->owner.load(std::memory_order_relaxed) == nullptr) {
        heap->owner.store(current_owner, std::memory_order_relaxed);
        heap->drain_remote();
        // Pages and huge mappings freed into a heap no thread uses go back
        // at once, past 1 MiB (glibc trims a dead thread's arena as its
        // blocks are freed); free slots in runs wait for the idle trim.
        if (heap->free_resident_pages() > k_pooled_dirty_pages) heap->purge();
        heap->pooled_ns = os::coarse_monotonic_ns();  // (idle from now on: trimmed again later)
        heap->owner.store(nullptr, std::memory_order_release);
    }
    g_lock.unlock();
}

void before_fork() { g_lock.lock(); }
void after_fork_parent() { g_lock.unlock(); }

void after_fork_child(const void* survivor) {
    g_lock.reset();
    for (Heap* h = g_all; h; h = h->all_next) {
        const void* o = h->owner.load(std::memory_order_relaxed);
        if (is_thread_token(o) && o != survivor) h->owner.store(k_orphan, std::memory_order_relaxed);
    }
    // Abandoned heaps whose retired request heaps belonged to an orphan are
    // consistent (abandoned outside malloc) and stay adoptable.
    //
    // ZMM_FORK_REKEY: a key of its own for the child (ZendMM's
    // zend_mm_refresh_key_child): a link forged with the parent's key, or a
    // sibling's, fails the check. Every heap that can still allocate or merge
    // is rewritten (free lists move between a thread's heaps, so theirs must
    // agree); orphans keep theirs (nothing is ever taken from them). Off by
    // default: writing every free slot copies every page of free memory into
    // the child (1M free 64-byte slots: 72 ms and 64 MiB per fork, against
    // 2.3 ms), which a program that forks to snapshot its memory, or forks
    // often from a large heap, cannot pay. Prefork servers with small parents
    // (PHP-FPM's case) can.
    if (!g_tuning.fork_rekey) return;
    uint64_t fresh = os::random_u64();
    for (Heap* h = g_all; h; h = h->all_next)
        if (h->owner.load(std::memory_order_relaxed) != k_orphan) h->rekey(fresh);
    g_key = fresh;
}

__attribute__((no_sanitize("thread"))) void total_stats(Heap_stats& out) {
    memset(&out, 0, sizeof out);
    Lock_guard guard(g_lock);
    for (Heap* h = g_all; h; h = h->all_next) {
        Heap_stats one;
        h->stats(one);
        out.add(one);
    }
}

size_t collect_all(Heap* own) {
    size_t released = own ? own->collect() : 0;
    Lock_guard guard(g_lock);
    for (Heap* h = g_pool; h; h = h->pool_next) released += h->collect();
    return released;
}

unsigned heaps_count() {
    Lock_guard guard(g_lock);
    return g_count;
}

unsigned pooled_count() {
    Lock_guard guard(g_lock);
    return g_pooled;
}

}  // namespace zmm::heap_pool
