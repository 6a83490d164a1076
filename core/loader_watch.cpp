#include "loader_watch.hpp"

#include <atomic>
#include <cstddef>
#include <cstring>
#include <link.h>

#include "spin_lock.hpp"

namespace zmm::loader_watch {
namespace {

// The executable segments of the objects mapped at the last look, each with
// a hash of its object's path (another object may take exactly the same
// addresses), and the segments of objects unloaded since, appended under
// the lock, each written before the count that publishes it.
struct Segment {
    uintptr_t lo, hi;
    uint64_t name_hash;
};
constexpr unsigned k_max_segments = 1024;
constexpr unsigned k_max_unloaded = 64;
Spin_lock g_lock;
Segment g_mapped[k_max_segments];
unsigned g_mapped_count = 0;
Counts g_seen;
Segment g_unloaded[k_max_unloaded];
std::atomic<unsigned> g_unloaded_count{0};
std::atomic<bool> g_overflowed{false};

struct Snapshot {
    Segment* out;  // nullptr: the counts alone
    unsigned count;
    Counts counts;
    bool truncated;
};

int snapshot_object(dl_phdr_info* info, size_t size, void* data) {
    auto* s = static_cast<Snapshot*>(data);
    if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs))
        s->counts = {info->dlpi_adds, info->dlpi_subs};
    if (!s->out) return 1;  // (the same in every entry)
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char* c = info->dlpi_name ? info->dlpi_name : ""; *c; ++c)
        h = (h ^ static_cast<unsigned char>(*c)) * 0x100000001b3ull;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
        if (s->count == k_max_segments) {
            s->truncated = true;
            return 1;
        }
        uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        s->out[s->count++] = {lo, lo + ph.p_memsz, h};
    }
    return 0;
}

// The objects mapped now into g_mapped (or `into`); their counts.
Snapshot take(Segment* into) {
    Snapshot s{into, 0, {}, false};
    dl_iterate_phdr(snapshot_object, &s);
    if (s.truncated) g_overflowed.store(true, std::memory_order_relaxed);
    return s;
}

// A segment of the last look that is no longer mapped: one of the unloaded.
void note_unloaded(const Segment& old) {
    unsigned n = g_unloaded_count.load(std::memory_order_relaxed);
    for (unsigned k = 0; k < n; ++k)
        if (g_unloaded[k].lo == old.lo && g_unloaded[k].hi == old.hi) return;
    if (n == k_max_unloaded) {
        g_overflowed.store(true, std::memory_order_relaxed);
        return;
    }
    g_unloaded[n] = old;
    g_unloaded_count.store(n + 1, std::memory_order_release);
}

}  // namespace

Counts counts() { return take(nullptr).counts; }

void start() {
    Lock_guard guard(g_lock);
    Snapshot s = take(g_mapped);
    g_mapped_count = s.count;
    g_seen = s.counts;
}

bool look(unsigned long long* unloads) {
    const Counts now_counts = counts();
    Lock_guard guard(g_lock);
    if (now_counts.loads == g_seen.loads && now_counts.unloads == g_seen.unloads) return false;
    static Segment now[k_max_segments];
    Snapshot s = take(now);
    const bool unloaded = s.counts.unloads != g_seen.unloads;
    for (unsigned i = 0; unloaded && i < g_mapped_count; ++i) {
        const Segment& old = g_mapped[i];
        bool kept = false;
        for (unsigned j = 0; j < s.count && !kept; ++j)
            kept = now[j].lo == old.lo && now[j].hi == old.hi && now[j].name_hash == old.name_hash;
        if (!kept) note_unloaded(old);
    }
    memcpy(g_mapped, now, s.count * sizeof(Segment));
    g_mapped_count = s.count;
    if (s.counts.loads > g_seen.loads) g_seen.loads = s.counts.loads;
    *unloads = s.counts.unloads;
    return unloaded;
}

void seen(unsigned long long unloads) {
    Lock_guard guard(g_lock);
    if (unloads > g_seen.unloads) g_seen.unloads = unloads;
}

bool through(const uintptr_t* pcs, unsigned n) {
    if (overflowed()) return true;  // (an unloaded segment may be unknown)
    unsigned count = g_unloaded_count.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; ++i)
        for (unsigned k = 0; k < count; ++k)
            if (pcs[i] >= g_unloaded[k].lo && pcs[i] < g_unloaded[k].hi) return true;
    return false;
}

bool overflowed() { return g_overflowed.load(std::memory_order_relaxed); }

}  // namespace zmm::loader_watch
