#include "stack_depot.hpp"

#include "loader_guard.hpp"
#include "loader_watch.hpp"
#include "object_headers.hpp"

#include <cstring>
#include <link.h>

#include "os.hpp"
#include "spin_lock.hpp"

namespace zmm::stack_depot {
namespace {

// Records are bump-allocated in segments that never move, so that a stack
// seen before is found without the lock: a bucket's head is published
// (release) after the record it names is written, and a record never
// changes after. An id is a record's place: its segment, then its offset
// in 8-byte units (so 0 is never a record). New stacks take the lock.
// (The lock on every put made two threads' traced allocations take turns.)
struct Record {
    uint32_t hash;
    uint32_t next;  // id of the next record in the same bucket
    uint32_t frames;
    uint32_t epoch;  // 0, or g_epoch when stored: see epoch_for
    Frame frame[1];  // `frames` of them
};

// Segments of 4 MiB, mapped as needed (address space counts under
// RLIMIT_AS: not reserved up front), 256 MiB in all.
constexpr unsigned k_segment_shift = 22;
constexpr size_t k_segment = size_t{1} << k_segment_shift;
constexpr unsigned k_max_segments = 64;
constexpr unsigned k_unit_shift = 3;  // ids count 8-byte units
constexpr unsigned k_segment_units_shift = k_segment_shift - k_unit_shift;  // log2 of a segment's units
constexpr uint32_t k_segment_units_mask = (1u << k_segment_units_shift) - 1;
constexpr size_t k_buckets = size_t{1} << 16;
constexpr size_t k_max_modules = 4096;

Spin_lock g_lock;
char* g_segments[k_max_segments];  // published with release, read with acquire
unsigned g_segment_count = 0;
size_t g_used = 8;  // in the last segment; offset 0 of segment 0 is "no stack"
uint32_t* g_buckets = nullptr;  // published last (ready)
size_t g_count = 0;

Module* g_modules = nullptr;
uint32_t g_module_count = 0;
uint32_t g_loader = k_no_module;
loader_watch::Counts g_seen;  // the loader's counts when g_current was made
// Raised by forget_modules. A stack through the addresses of an unloaded
// object carries the epoch it was stored in: the same addresses may be
// other code since, so a stack stored before is not one stored after (its
// frames name the old modules). Any other stack carries 0 and stays one
// record across unloads. Written under the lock, read without.
uint32_t g_epoch = 0;

uint32_t epoch_for(const uintptr_t* pcs, unsigned n) {
    uint32_t e = __atomic_load_n(&g_epoch, __ATOMIC_RELAXED);
    return e && loader_watch::through(pcs, n) ? e : 0;
}

// The modules as mapped now (indexes into g_modules); rebuilt when the
// loader reports a dlopen or dlclose since the last look.
uint32_t* g_current = nullptr;
uint32_t g_current_count = 0;

template <class T>
void drop(T*& p, size_t bytes) {
    if (p) os::unmap(p, bytes);
    p = nullptr;
}

// Sets up the tables (all or none: the OS may refuse, and a later call
// tries again). Under the lock.
bool ready() {
    if (g_buckets) return true;
    char* first = static_cast<char*>(os::map(k_segment));
    auto* buckets = static_cast<uint32_t*>(os::map(k_buckets * sizeof(uint32_t)));
    g_modules = static_cast<Module*>(os::map(k_max_modules * sizeof(Module)));
    g_current = static_cast<uint32_t*>(os::map(k_max_modules * sizeof(uint32_t)));
    if (!first || !buckets || !g_modules || !g_current) {
        drop(first, k_segment);
        drop(buckets, k_buckets * sizeof(uint32_t));
        drop(g_modules, k_max_modules * sizeof(Module));
        drop(g_current, k_max_modules * sizeof(uint32_t));
        return false;
    }
    __atomic_store_n(&g_segments[0], first, __ATOMIC_RELEASE);
    g_segment_count = 1;
    __atomic_store_n(&g_buckets, buckets, __ATOMIC_RELEASE);
    return true;
}

// A new record's id with room for `bytes`: in the last segment, else in a
// new one. 0 when the OS refuses or the depot is full. Under the lock.
uint32_t reserve(size_t bytes) {
    if (g_used + bytes > k_segment) {
        if (g_segment_count == k_max_segments) return 0;
        char* next = static_cast<char*>(os::map(k_segment));
        if (!next) return 0;
        __atomic_store_n(&g_segments[g_segment_count++], next, __ATOMIC_RELEASE);
        g_used = 0;
    }
    uint32_t id = static_cast<uint32_t>(((g_segment_count - 1) << k_segment_units_shift) | (g_used >> k_unit_shift));
    g_used += bytes;
    return id;
}

// Two instructions a frame (xor, multiply), mixed once at the end.
uint32_t hash_of(const uintptr_t* pcs, unsigned n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (unsigned i = 0; i < n; ++i) h = (h ^ pcs[i]) * 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return static_cast<uint32_t>(h);
}

Record* record(uint32_t id) {
    char* segment = __atomic_load_n(&g_segments[id >> k_segment_units_shift], __ATOMIC_ACQUIRE);
    return reinterpret_cast<Record*>(segment + (size_t{id & k_segment_units_mask} << k_unit_shift));
}

bool holds(const Record* r, const uintptr_t* pcs, unsigned n, uint32_t epoch) {
    if (r->frames != n || r->epoch != epoch) return false;
    for (unsigned i = 0; i < n; ++i)
        if (r->frame[i].pc != pcs[i]) return false;
    return true;
}

// The id of the stored stack equal to pcs[0..n), or 0, from a bucket's head.
uint32_t find(uint32_t head, uint32_t hash, const uintptr_t* pcs, unsigned n, uint32_t epoch) {
    for (uint32_t id = head; id; id = record(id)->next) {
        const Record* r = record(id);
        if (r->hash == hash && holds(r, pcs, n, epoch)) return id;
    }
    return 0;
}

// The object at `base` whose segments span [lo, hi): its index in g_modules
// (the same object as before keeps its index) joins the current ones.
void add_current(uintptr_t base, uintptr_t lo, uintptr_t hi, const char* path) {
    if (lo >= hi || g_current_count >= k_max_modules) return;
    const char* name = path ? path : "";
    for (uint32_t m = 0; m < g_module_count; ++m)
        if (g_modules[m].base == base && g_modules[m].lo == lo && strcmp(g_modules[m].path, name) == 0) {
            g_current[g_current_count++] = m;
            return;
        }
    if (g_module_count >= k_max_modules) return;
    Module& m = g_modules[g_module_count];
    m.base = base;
    m.lo = lo;
    m.hi = hi;
    size_t len = strlen(name);
    if (len >= sizeof m.path) len = sizeof m.path - 1;
    memcpy(m.path, name, len);
    m.path[len] = 0;
    if (strstr(m.path, "/ld-linux") || strstr(m.path, "/ld-") == m.path)
        __atomic_store_n(&g_loader, g_module_count, __ATOMIC_RELEASE);
    g_current[g_current_count++] = g_module_count++;
}

// The object loaded at `bias` with these program headers.
void add_headers(const ElfW(Phdr)* phdr, int phnum, uintptr_t bias, const char* path) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < phnum; ++i) {
        const auto& ph = phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        uintptr_t a = bias + ph.p_vaddr;
        if (a < lo) lo = a;
        if (a + ph.p_memsz > hi) hi = a + ph.p_memsz;
    }
    add_current(bias, lo, hi, path);
}

int add_object(dl_phdr_info* info, size_t, void*) {
    add_headers(info->dlpi_phdr, info->dlpi_phnum, info->dlpi_addr, info->dlpi_name);
    return 0;
}

void refresh_modules_locked() {
    loader::Use use;
    const loader_watch::Counts now = loader_watch::counts();
    if (g_current_count && now.loads == g_seen.loads && now.unloads == g_seen.unloads) return;
    g_seen = now;
    g_current_count = 0;
    dl_iterate_phdr(add_object, nullptr);
}

uint32_t find_current(uintptr_t pc) {
    for (uint32_t i = 0; i < g_current_count; ++i) {
        const Module& m = g_modules[g_current[i]];
        if (pc >= m.lo && pc < m.hi) return g_current[i];
    }
    return k_no_module;
}

uint32_t module_of_locked(uintptr_t pc) {
    uint32_t m = find_current(pc);
    if (m != k_no_module) return m;
    if (loader::may_be_locked()) {
        // (No dl_iterate_phdr: the object that holds pc alone, without the
        // loader's lock.)
        object_headers::Object o;
        if (object_headers::find(pc, o) == object_headers::Found::yes) add_headers(o.phdr, o.phnum, o.bias, o.name);
    } else {
        refresh_modules_locked();
    }
    return find_current(pc);
}

// put's hash table part: the stack's id, found or added.
uint32_t put_new(const uintptr_t* pcs, unsigned n, uint32_t epoch) {
    uint32_t hash = hash_of(pcs, n);
    // Seen before: no lock.
    if (uint32_t* buckets = __atomic_load_n(&g_buckets, __ATOMIC_ACQUIRE)) {
        uint32_t head = __atomic_load_n(&buckets[hash & (k_buckets - 1)], __ATOMIC_ACQUIRE);
        if (uint32_t id = find(head, hash, pcs, n, epoch)) return id;
    }
    Lock_guard guard(g_lock);
    if (!ready()) return 0;
    uint32_t& bucket = g_buckets[hash & (k_buckets - 1)];
    if (uint32_t id = find(bucket, hash, pcs, n, epoch)) return id;  // (another thread's, since)
    size_t bytes = (offsetof(Record, frame) + n * sizeof(Frame) + 7) & ~size_t{7};
    uint32_t id = reserve(bytes);
    if (!id) return 0;
    Record* r = record(id);
    r->hash = hash;
    r->frames = n;
    r->epoch = epoch;
    for (unsigned i = 0; i < n; ++i) r->frame[i] = {pcs[i], module_of_locked(pcs[i])};
    r->next = bucket;
    __atomic_store_n(&bucket, id, __ATOMIC_RELEASE);
    ++g_count;
    return id;
}

// The stack this thread put last: a loop's allocations put the same stack
// over and over, compared here with its record before any hashing.
thread_local uint32_t t_last = 0;

}  // namespace

uint32_t put(const uintptr_t* pcs, unsigned n) {
    if (n == 0) return 0;
    if (n > k_max_frames) n = k_max_frames;
    const uint32_t epoch = epoch_for(pcs, n);
    if (t_last && holds(record(t_last), pcs, n, epoch)) return t_last;
    uint32_t id = put_new(pcs, n, epoch);
    if (id) t_last = id;
    return id;
}

unsigned get(uint32_t id, Frame* out, unsigned max) {
    if (id == 0 || !__atomic_load_n(&g_buckets, __ATOMIC_ACQUIRE)) return 0;
    // (Ids come from put, their records written; one that did not is 0 frames.)
    if ((id >> k_segment_units_shift) >= k_max_segments || !__atomic_load_n(&g_segments[id >> k_segment_units_shift], __ATOMIC_ACQUIRE))
        return 0;
    const Record* r = record(id);
    unsigned n = r->frames < max ? r->frames : max;
    for (unsigned i = 0; i < n; ++i) out[i] = r->frame[i];
    return n;
}

const Module* module(uint32_t index) {
    return index < g_module_count ? &g_modules[index] : nullptr;
}

void forget_modules() {
    Lock_guard guard(g_lock);
    g_current_count = 0;  // the next lookup asks the loader
    __atomic_store_n(&g_epoch, g_epoch + 1, __ATOMIC_RELAXED);
}

void before_fork() { g_lock.lock(); }
void after_fork_parent() { g_lock.unlock(); }
void after_fork_child() { g_lock.reset(); }

bool is_loader_pc(uintptr_t pc) {
    // Module entries are written once, before g_loader names them.
    uint32_t l = __atomic_load_n(&g_loader, __ATOMIC_ACQUIRE);
    if (l == k_no_module || !g_modules) return false;
    const Module& m = g_modules[l];
    return pc >= m.lo && pc < m.hi;
}

size_t count() {
    Lock_guard guard(g_lock);
    return g_count;
}

}  // namespace zmm::stack_depot
