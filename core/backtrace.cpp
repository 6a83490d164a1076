#include "backtrace.hpp"

#include "fast_unwind.hpp"
#include "loader_guard.hpp"
#include "loader_watch.hpp"
#include "os.hpp"
#include "stack_depot.hpp"

#include <atomic>
#include <dlfcn.h>
#include <link.h>


// For its types only: libunwind is reached through the pointers prepare()
// looks up, never linked.
#define UNW_LOCAL_ONLY
#include <libunwind.h>

namespace zmm::backtrace {
namespace {

using Backtrace_fn = int (*)(void**, int);
std::atomic<Backtrace_fn> g_unw_backtrace{nullptr};
uintptr_t g_own_lo = 0, g_own_hi = 0;
std::atomic<bool> g_fast{true};  // fast_unwind first (ZMM_FAST_UNWIND)
// Prepared without libunwind, in a child whose loader may be locked (no
// dlopen there): captures the fast unwinder cannot make have no frames.
std::atomic<bool> g_fast_only{false};

// libunwind's step by step interface, for stacks through the addresses of
// an unloaded object: unw_backtrace keeps a per-thread cache of frame rules
// by address that nothing can flush (libunwind 1.6's trace cache), where
// unw_step, with caching off (prepare()), reads the tables anew each time.
// (unw_step uncached is about 100 times slower: only for those stacks.)
struct Stepper {
    int (*getcontext)(unw_context_t*);
    int (*init_local)(unw_cursor_t*, unw_context_t*);
    int (*step)(unw_cursor_t*);
    int (*get_reg)(unw_cursor_t*, unw_regnum_t, unw_word_t*);
};
Stepper g_stepper{};

// The return addresses of the calling thread by unw_step, innermost first
// (this function's own frame too, as unw_backtrace would give it).
__attribute__((noinline)) int step_backtrace(uintptr_t* out, int max) {
    unw_context_t context;
    unw_cursor_t cursor;
    if (g_stepper.getcontext(&context) != 0 || g_stepper.init_local(&cursor, &context) != 0) return 0;
    int n = 0;
    do {
        unw_word_t ip = 0;
        if (g_stepper.get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
        out[n++] = ip;
    } while (n < max && g_stepper.step(&cursor) > 0);
    return n;
}

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

bool prepared() {
    return g_unw_backtrace.load(std::memory_order_acquire) != nullptr || g_fast_only.load(std::memory_order_acquire);
}

bool prepare(bool fast) {
    g_fast.store(fast, std::memory_order_relaxed);
    if (g_unw_backtrace.load(std::memory_order_acquire)) return true;
    if (loader::may_be_locked()) {
        // (dlopen would wait for the loader's lock for good.)
        if (g_own_lo == 0) return false;
        g_fast_only.store(true, std::memory_order_release);
        return true;
    }
    loader::Use use;
    os::Standard_descriptors_held standard_fds;  // libunwind's pipe: not on 0-2
    void* lib = loader::open_library("libunwind.so.8");
    if (!lib) return false;
    auto fn = reinterpret_cast<Backtrace_fn>(dlsym(lib, "unw_backtrace"));
    if (!fn) return false;
    // No register-state cache: unw_step (after an unload) and unw_backtrace's
    // first look at an address then read the unwind tables as they are now.
    // unw_flush_cache would be the alternative, but it unmaps what other
    // threads' libunwind calls may be reading. (unw_backtrace's own trace
    // cache keeps its repeated captures fast.)
    using Policy_fn = int (*)(void*, int);
    void** local_space = static_cast<void**>(dlsym(lib, "_ULx86_64_local_addr_space"));
    auto set_policy = reinterpret_cast<Policy_fn>(dlsym(lib, "_ULx86_64_set_caching_policy"));
    if (local_space && set_policy) set_policy(*local_space, 0 /* UNW_CACHE_NONE */);
    Stepper st{};
    st.getcontext = reinterpret_cast<decltype(st.getcontext)>(dlsym(lib, "_Ux86_64_getcontext"));
    st.init_local = reinterpret_cast<decltype(st.init_local)>(dlsym(lib, "_ULx86_64_init_local"));
    st.step = reinterpret_cast<decltype(st.step)>(dlsym(lib, "_ULx86_64_step"));
    st.get_reg = reinterpret_cast<decltype(st.get_reg)>(dlsym(lib, "_ULx86_64_get_reg"));
    if (st.getcontext && st.init_local && st.step && st.get_reg) g_stepper = st;
    loader_watch::start();
    // First use: libunwind's global set-up (its validate-memory pipe, its
    // mempool pages, the modules' list) happens here, not in malloc. Step by
    // step where it can: unw_backtrace's first call on a thread maps that
    // thread's trace cache (256 KiB, written whole), which every leak scan
    // would then read as a root. A thread maps one only when a capture of
    // its goes to unw_backtrace (the fast unwinder declined it, or
    // ZMM_FAST_UNWIND=0), and that call sets the cache up inside the
    // allocator, as it always did on other threads: its key (once per
    // process), the thread's first use of libunwind's TLS (glibc's
    // dl_load_tls_lock) and pthread_setspecific, whose allocations are the
    // reentry heap's.
    uintptr_t warm[8];
    if (g_stepper.step)
        step_backtrace(warm, 8);
    else
        fn(reinterpret_cast<void**>(warm), 8);
    g_unw_backtrace.store(fn, std::memory_order_release);
    return true;
}

namespace {

// capture() past its common case: `fast_tried`, the fast unwinder with the
// own range failed already; `caller`, capture()'s return address.
__attribute__((noinline)) unsigned capture_general(uintptr_t* out, unsigned max, fast_unwind::Memo* memo,
                                                   uint64_t* tag, uintptr_t start_frame, bool fast_tried,
                                                   uintptr_t caller) {
    Backtrace_fn fn = g_unw_backtrace.load(std::memory_order_acquire);
    if ((!fn && !g_fast_only.load(std::memory_order_relaxed)) || max == 0) return 0;
    // In a child whose loader may be locked, libunwind would wait for its
    // lock (dl_iterate_phdr, every frame): the fast unwinder alone, even
    // under ZMM_FAST_UNWIND=0.
    const bool locked = loader::may_be_locked();
    const bool fast = g_fast.load(std::memory_order_relaxed) || locked;
    // zmm's own frames above the program's (those above start_frame, if
    // given: the allocator's entries), unwound and not kept: the fast
    // unwinder skips them itself.
    if (fast && g_own_lo != 0 && !fast_tried) {
        int n = fast_unwind::capture(out, max, g_own_lo, g_own_hi, memo, tag, start_frame);
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
    if (n < 0 && (!fn || locked)) return 0;  // (fast only)
    if (n < 0) {
        loader::Use use;  // libunwind looks up each frame with dl_iterate_phdr
        // (Through an unloaded object's segment, unw_backtrace's cache may
        // hold the old object's rules.)
        const bool stepwise = loader_watch::overflowed();
        if (!stepwise) n = fn(reinterpret_cast<void**>(raw), static_cast<int>(want));
        if (stepwise || (n > 0 && loader_watch::through(raw, static_cast<unsigned>(n))))
            n = g_stepper.step ? step_backtrace(raw, static_cast<int>(want)) : 0;
    }
    // The allocator's frames (this function's and capture()'s among them)
    // are skipped; with no range set, those up to capture()'s caller.
    const unsigned count = n > 0 ? static_cast<unsigned>(n) : 0;
    unsigned kept = 0, i = 0;
    if (g_own_lo != 0) {
        while (i < count && raw[i] >= g_own_lo && raw[i] < g_own_hi) ++i;
    } else {
        while (i < count && raw[i] != caller) ++i;
        if (i == count) i = count > 0 ? 1 : 0;  // (not found: this function's own frame alone)
    }
    for (; i < count && kept < max; ++i) out[kept++] = raw[i];
    return kept;
}

}  // namespace

unsigned capture(uintptr_t* out, unsigned max, fast_unwind::Memo* memo, uint64_t* tag,
                 uintptr_t start_frame) {
    if (memo) {
        *tag = 0;
        memo->last = nullptr;
    }
    // The common case, in a frame of its own size (capture_general's buffer
    // costs every call a prologue of pushes): the fast unwinder, which skips
    // zmm's own frames itself.
    const bool fast_tried =
        g_fast.load(std::memory_order_relaxed) && g_own_lo != 0 && max != 0 &&
        (g_unw_backtrace.load(std::memory_order_acquire) || g_fast_only.load(std::memory_order_relaxed));
    if (fast_tried) {
        int n = fast_unwind::capture(out, max, g_own_lo, g_own_hi, memo, tag, start_frame);
        if (n >= 0) return static_cast<unsigned>(n);
    }
    return capture_general(out, max, memo, tag, start_frame, fast_tried,
                           reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}

uint64_t memo_tag(fast_unwind::Memo* memo, unsigned max, uintptr_t start_frame) {
    // (Without the fast unwinder, or its range of zmm's own code, no entry
    // has a tag: the lookup would be time lost.)
    if (g_own_lo == 0 || !g_fast.load(std::memory_order_relaxed)) return 0;
    return fast_unwind::replay_tag(*memo, max, g_own_lo, g_own_hi, start_frame);
}

void check_unloads() {
    // (A look is a dl_iterate_phdr. In a child whose loader may be locked,
    // unloads go unseen: glibc's own dlopen of a new object waits there.)
    if (loader::may_be_locked()) return;
    unsigned long long unloads = 0;
    {
        loader::Use use;
        if (!loader_watch::look(&unloads)) return;
    }
    // (Outside the gate: the depot takes its lock before it, as the fork
    // handlers do. The depot first: a capture between the two then stores
    // its stack anew, never an old stack under the memo's new generation.)
    stack_depot::forget_modules();
    fast_unwind::forget_rules();
    loader::Use use;
    loader_watch::seen(unloads);
}

}  // namespace zmm::backtrace
