#include "backtrace.hpp"

#include "fast_unwind.hpp"
#include "loader_guard.hpp"

#include <atomic>
#include <dlfcn.h>
#include <link.h>

namespace zmm::backtrace {
namespace {

using Backtrace_fn = int (*)(void**, int);
std::atomic<Backtrace_fn> g_unw_backtrace{nullptr};
uintptr_t g_own_lo = 0, g_own_hi = 0;
std::atomic<bool> g_fast{true};  // fast_unwind first (ZMM_FAST_UNWIND)

struct Range_query {
    uintptr_t address;
    uintptr_t lo, hi;
    bool found;
};

int find_text(dl_phdr_info* info, size_t, void* data) {
    auto* q = static_cast<Range_query*>(data);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
        uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
        if (q->address >= lo && q->address < hi) {
            q->lo = lo;
            q->hi = hi;
            q->found = true;
            return 1;
        }
    }
    return 0;
}

}  // namespace

bool text_range_of(const void* address, uintptr_t* lo, uintptr_t* hi) {
    Range_query q{reinterpret_cast<uintptr_t>(address), 0, 0, false};
    loader::Use use;
    dl_iterate_phdr(find_text, &q);
    if (q.found) {
        *lo = q.lo;
        *hi = q.hi;
    }
    return q.found;
}

void set_own_range(uintptr_t lo, uintptr_t hi) {
    g_own_lo = lo;
    g_own_hi = hi;
}

bool prepared() { return g_unw_backtrace.load(std::memory_order_acquire) != nullptr; }

bool prepare(bool fast) {
    g_fast.store(fast, std::memory_order_relaxed);
    if (g_unw_backtrace.load(std::memory_order_acquire)) return true;
    loader::Use use;
    void* lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return false;
    auto fn = reinterpret_cast<Backtrace_fn>(dlsym(lib, "unw_backtrace"));
    if (!fn) return false;
    // Per-thread caching makes repeated captures fast and lock-free.
    using Policy_fn = int (*)(void*, int);
    void** local_space = static_cast<void**>(dlsym(lib, "_ULx86_64_local_addr_space"));
    auto set_policy = reinterpret_cast<Policy_fn>(dlsym(lib, "_ULx86_64_set_caching_policy"));
    if (local_space && set_policy) set_policy(*local_space, 2 /* UNW_CACHE_PER_THREAD */);
    void* warm[8];
    fn(warm, 8);  // first use: libunwind's own set-up happens here, not in malloc
    g_unw_backtrace.store(fn, std::memory_order_release);
    return true;
}

unsigned capture(uintptr_t* out, unsigned max, fast_unwind::Memo* memo, uint64_t* tag) {
    if (memo) {
        *tag = 0;
        memo->last = nullptr;
    }
    Backtrace_fn fn = g_unw_backtrace.load(std::memory_order_acquire);
    if (!fn || max == 0) return 0;
    const bool fast = g_fast.load(std::memory_order_relaxed);
    // zmm's own frames above the program's (malloc, its slow path, the
    // tracing, this), unwound and not kept: the fast unwinder skips them itself.
    if (fast && g_own_lo != 0) {
        int n = fast_unwind::capture(out, max, g_own_lo, g_own_hi, memo, tag);
        if (n >= 0) return static_cast<unsigned>(n);
    }
    // Else into a buffer, and the own frames skipped here (libunwind's, or
    // the fast unwinder's without the range).
    constexpr unsigned k_room = 64;  // the allocator's own frames come first
    uintptr_t raw[k_room];
    // zmm's own frames above the program's are a handful: unwinding more is
    // time lost.
    const unsigned want = max + 8 < k_room ? max + 8 : k_room;
    int n = fast && g_own_lo == 0 ? fast_unwind::capture(raw, want) : -1;
    if (n < 0) {
        loader::Use use;  // libunwind looks up each frame with dl_iterate_phdr
        n = fn(reinterpret_cast<void**>(raw), static_cast<int>(want));
    }
    unsigned kept = 0, i = 0;
    // skip capture() itself and the allocator's frames
    for (; i < static_cast<unsigned>(n > 0 ? n : 0); ++i) {
        uintptr_t pc = raw[i];
        if (!(pc >= g_own_lo && pc < g_own_hi) && pc != reinterpret_cast<uintptr_t>(&capture)) break;
    }
    if (g_own_lo == 0 && i == 0 && n > 0) i = 1;  // no range set: drop capture() itself
    for (; i < static_cast<unsigned>(n) && kept < max; ++i) out[kept++] = raw[i];
    return kept;
}

}  // namespace zmm::backtrace
