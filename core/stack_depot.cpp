#include "stack_depot.hpp"

#include "loader_guard.hpp"

#include <cstring>
#include <link.h>

#include "os.hpp"
#include "spin_lock.hpp"

namespace zmm::stack_depot {
namespace {

// Records live in one reserved region, bump-allocated; an id is the record's
// offset in 8-byte units (so 0 is never a record).
struct Record {
    uint32_t hash;
    uint32_t next;  // id of the next record in the same bucket
    uint32_t frames;
    uint32_t pad;
    Frame frame[1];  // `frames` of them
};

// The records: one region, grown by doubling up to k_region (address space
// counts under RLIMIT_AS, so it is not reserved whole up front).
constexpr size_t k_region = size_t{256} << 20;
constexpr size_t k_first_region = size_t{4} << 20;
constexpr size_t k_buckets = size_t{1} << 16;
constexpr size_t k_max_modules = 4096;

Spin_lock g_lock;
char* g_region = nullptr;
size_t g_capacity = 0;
size_t g_used = 8;  // offset 0 is "no stack"
uint32_t* g_buckets = nullptr;
size_t g_count = 0;

Module* g_modules = nullptr;
uint32_t g_module_count = 0;
uint32_t g_loader = k_no_module;
unsigned long long g_seen_adds = 0, g_seen_subs = 0;
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
// tries again).
bool ready() {
    if (g_region) return true;
    g_region = static_cast<char*>(os::map(k_first_region));
    g_buckets = static_cast<uint32_t*>(os::map(k_buckets * sizeof(uint32_t)));
    g_modules = static_cast<Module*>(os::map(k_max_modules * sizeof(Module)));
    g_current = static_cast<uint32_t*>(os::map(k_max_modules * sizeof(uint32_t)));
    if (!g_region || !g_buckets || !g_modules || !g_current) {
        drop(g_region, k_first_region);
        drop(g_buckets, k_buckets * sizeof(uint32_t));
        drop(g_modules, k_max_modules * sizeof(Module));
        drop(g_current, k_max_modules * sizeof(uint32_t));
        return false;
    }
    g_capacity = k_first_region;
    return true;
}

// Room for `bytes` more: the region doubled (copied) if need be.
bool room_for(size_t bytes) {
    if (g_used + bytes <= g_capacity) return true;
    size_t cap = g_capacity;
    while (cap < g_used + bytes) cap *= 2;
    if (cap > k_region) return false;
    char* bigger = static_cast<char*>(os::map(cap));
    if (!bigger) return false;
    memcpy(bigger, g_region, g_used);
    os::unmap(g_region, g_capacity);
    g_region = bigger;
    g_capacity = cap;
    return true;
}

uint32_t hash_of(const uintptr_t* pcs, unsigned n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (unsigned i = 0; i < n; ++i) {
        h ^= pcs[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    return static_cast<uint32_t>(h);
}

Record* record(uint32_t id) { return reinterpret_cast<Record*>(g_region + size_t{id} * 8); }

struct Scan {
    unsigned long long adds, subs;
};

int count_objects(dl_phdr_info* info, size_t size, void* data) {
    auto* s = static_cast<Scan*>(data);
    if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
        s->adds = info->dlpi_adds;
        s->subs = info->dlpi_subs;
    }
    return 1;  // the counters are the same in every entry: one is enough
}

int add_object(dl_phdr_info* info, size_t, void*) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        uintptr_t a = info->dlpi_addr + ph.p_vaddr;
        if (a < lo) lo = a;
        if (a + ph.p_memsz > hi) hi = a + ph.p_memsz;
    }
    if (lo >= hi || g_current_count >= k_max_modules) return 0;
    const char* name = info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "";
    // The same object as before keeps its index.
    for (uint32_t m = 0; m < g_module_count; ++m)
        if (g_modules[m].base == info->dlpi_addr && g_modules[m].lo == lo && strcmp(g_modules[m].path, name) == 0) {
            g_current[g_current_count++] = m;
            return 0;
        }
    if (g_module_count >= k_max_modules) return 0;
    Module& m = g_modules[g_module_count];
    m.base = info->dlpi_addr;
    m.lo = lo;
    m.hi = hi;
    size_t len = strlen(name);
    if (len >= sizeof m.path) len = sizeof m.path - 1;
    memcpy(m.path, name, len);
    m.path[len] = 0;
    if (strstr(m.path, "/ld-linux") || strstr(m.path, "/ld-") == m.path)
        __atomic_store_n(&g_loader, g_module_count, __ATOMIC_RELEASE);
    g_current[g_current_count++] = g_module_count++;
    return 0;
}

void refresh_modules_locked() {
    Scan s{0, 0};
    loader::Use use;
    dl_iterate_phdr(count_objects, &s);
    if (g_current_count && s.adds == g_seen_adds && s.subs == g_seen_subs) return;
    g_seen_adds = s.adds;
    g_seen_subs = s.subs;
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
    refresh_modules_locked();
    return find_current(pc);
}

}  // namespace

uint32_t put(const uintptr_t* pcs, unsigned n) {
    if (n == 0) return 0;
    if (n > k_max_frames) n = k_max_frames;
    uint32_t hash = hash_of(pcs, n);
    Lock_guard guard(g_lock);
    if (!ready()) return 0;
    uint32_t& bucket = g_buckets[hash & (k_buckets - 1)];
    for (uint32_t id = bucket; id; id = record(id)->next) {
        Record* r = record(id);
        if (r->hash != hash || r->frames != n) continue;
        bool same = true;
        for (unsigned i = 0; i < n && same; ++i) same = r->frame[i].pc == pcs[i];
        if (same) return id;
    }
    size_t bytes = (offsetof(Record, frame) + n * sizeof(Frame) + 7) & ~size_t{7};
    if (!room_for(bytes)) return 0;
    uint32_t id = static_cast<uint32_t>(g_used / 8);
    Record* r = record(id);
    g_used += bytes;
    r->hash = hash;
    r->frames = n;
    for (unsigned i = 0; i < n; ++i) r->frame[i] = {pcs[i], module_of_locked(pcs[i])};
    r->next = bucket;
    bucket = id;
    ++g_count;
    return id;
}

unsigned get(uint32_t id, Frame* out, unsigned max) {
    if (id == 0) return 0;
    Lock_guard guard(g_lock);  // the region may move as it grows
    if (!g_region) return 0;
    Record* r = record(id);
    unsigned n = r->frames < max ? r->frames : max;
    for (unsigned i = 0; i < n; ++i) out[i] = r->frame[i];
    return n;
}

const Module* module(uint32_t index) {
    return index < g_module_count ? &g_modules[index] : nullptr;
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
