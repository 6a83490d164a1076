// The C allocation interface: every entry point a program or glibc may call.
// Thin: heap logic is in core/, start-up in startup.cpp.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include "api.hpp"
#include "backtrace.hpp"
#include "debug_checks.hpp"
#include "diag.hpp"
#include "format.hpp"
#include "glibc_heap.hpp"
#include "heap_pool.hpp"
#include "libc_symbols.hpp"
#include "loader_guard.hpp"
#include "options.hpp"
#include "reentry.hpp"
#include "request.hpp"

#define ZMM_EXPORT extern "C" __attribute__((visibility("default")))

namespace zmm::api {

// The slow paths below first ask whether the thread was already inside the
// allocator (reentry.hpp): a signal handler's call, served away
// from the heaps the interrupted call may be changing.

// An allocation that found the thread inside the allocator (or in a signal
// handler): the reentry heap, or glibc when zmm is bypassed.
static void* reentered_alloc(size_t size, size_t alignment, bool zeroed) {
    if (bypassed()) {
        const libc::Functions& f = libc::functions();
        if (zeroed) return f.calloc(1, size);
        return alignment ? f.memalign(alignment, size) : f.malloc(size);
    }
    return reentry::alloc(size, alignment, zeroed);
}

// malloc's slow path, inside the allocator already. `entry`: the frame of
// the allocator's entry (trace_allocation's stack starts there), or null.
static void* malloc_inside(size_t size, const void* entry) {
    if (Heap* t = traced_request_heap()) {  // (every allocation of a traced request comes here)
        void* p = t->alloc(size);
        trace_allocation(t, p, size, entry);
        return p;
    }
    Heap* h = thread_heap();
    if (!h) {
        if (bypassed()) return libc::functions().malloc(size);
        errno = ENOMEM;
        return nullptr;
    }
    if (__builtin_expect(options().debug, 0)) {
        if (size > SIZE_MAX - debug_checks::k_canary_bytes) {
            errno = ENOMEM;
            return nullptr;
        }
        // Blocks other threads freed are checked as they come back: at once
        // (every ZMM_DEBUG allocation comes here), not when a bin runs out.
        h->drain_remote();
        void* p = h->alloc(size + debug_checks::k_canary_bytes);
        debug_checks::on_alloc(*h, p, size);
        if (h->request) trace_allocation(h, p, size, entry);
        return p;
    }
    void* p = h->alloc(size);
    if (h->request) trace_allocation(h, p, size, entry);
    return p;
}

void* malloc_slow(size_t size, const void* entry) {
    if (reentry::inside()) return reentered_alloc(size, 0, false);
    Busy_section busy;
    // Without an entry, this frame's return address is the program's
    // (malloc jumps here): a traced allocation's unwinding starts here.
    return malloc_inside(size, entry ? entry : __builtin_frame_address(0));
}

// Not a block of zmm's: glibc's (handed back), or nothing anyone allocated.
static void free_foreign(void* p) {
    if (glibc_heap::owns(p) || bypassed()) {
        if (auto f = libc::functions().free) return f(p);
    }
    misuse(Misuse::unknown_pointer, p);
}

// free's slow path, inside the allocator already.
static void free_inside(void* p) {
    if (__builtin_expect(options().debug, 0)) debug_checks::on_free(p, thread_token());
    if (!Heap::free_any(p, thread_token(), t_state.persistent)) free_foreign(p);
}

// A full outbox chain goes to its heap: a slow path.
__attribute__((noinline)) static void send_full_chain(Heap* outbox, unsigned bin) {
    Busy_section busy;
    outbox->send_outbox_chain(bin);
}

// The common case of a free in another heap's chunk: a thread outside the
// allocator (no reentry), in no traced request (whose slow paths go to its
// heap: `direct`), that takes no heap from the pool, without ZMM_DEBUG's
// checks.
static inline bool plain_free_in_other_heap() {
    return __builtin_expect(t_state.in_allocator == 0 &&
                                (t_state.request == nullptr || !t_state.request->direct) &&
                                t_state.exchange_tries <= 0,
                            1) &&
           !options().debug;
}

static void free_other_heap_slow(void* p);

// p is in a chunk of another heap's. A small block of another live
// thread's persistent heap joins this thread's outbox chain at once (larson:
// most frees); a block of another heap of this thread's (its persistent
// heap's during a request, its request heap's during a traced one) is freed
// there. A thread that has not allocated yet may first take p's heap, if it
// waits in the pool (take_heap_of): p's free is then its own.
static void free_other_heap(void* p) {
    // The common case's small slot joins the outbox's chain, inline and
    // with no Busy_section (see try_free_to_outbox).
    if (plain_free_in_other_heap())
        if (Heap* outbox = t_state.persistent; __builtin_expect(outbox != nullptr, 1)) {
            const int r = outbox->try_free_to_outbox(p, thread_token());
            if (__builtin_expect(r == 0, 1)) return;
            if (r > 0) return send_full_chain(outbox, static_cast<unsigned>(r - 1));
        }
    free_other_heap_slow(p);
}

__attribute__((noinline)) static void free_other_heap_slow(void* p) {
    // The common case that try_free_to_outbox declined (a large block, a
    // heap whose thread left, a chain for another heap) or that has no
    // outbox yet: as before it, inside the allocator.
    if (plain_free_in_other_heap()) {
        Busy_section busy;
        return Heap::free_in_chunk_of_other(p, thread_token(), t_state.persistent);
    }
    // (Every free of a traced request's block comes here: its heap is the
    // thread's, its block leaves the table. Not a signal handler's free
    // inside the allocator: the reentry path's, whatever the request's
    // state then.)
    if (Heap* t = reentry::inside() ? nullptr : traced_request_heap(); t && Chunk::of(p)->heap == t) {
        Busy_section busy;
        return t->free_traced(p);
    }
    if (__builtin_expect(t_state.exchange_tries > 0, 0) && !reentry::inside()) {
        take_heap_of(p);
        if (Heap* h = t_heap; h->owns_chunk_of(p)) return free_slow(p);  // (its own now: an ordinary free)
    }
    if (!reentry::inside() && !options().debug) {
        Busy_section busy;
        return Heap::free_in_chunk_of_other(p, thread_token(), t_state.persistent);
    }
    free_slow(p);
}

// A traced request's free (free_other_heap's route) erases p from its
// table, a slot at random in it: asked of the cache here, where it first
// misses the fast path. (bench_requests traced, under perf: the erase's
// share of the samples 8.7-9.2% -> 6.6-7.1%.) `h`, the heap the fast path
// tried: the empty heap in a traced request, a thread's heap on a
// cross-thread free (then a comparison, no load).
inline void prefetch_traced_entry(const void* p, const Heap* h) {
    if (h != &g_empty_heap) return;
    if (const Request* r = t_state.request; r && r->traced) r->table.prefetch(reinterpret_cast<uintptr_t>(p));
}

__attribute__((noinline)) void free_uncached(void* p, Heap* h) {
    prefetch_traced_entry(p, h);
    if (!is_chunk_granule(reinterpret_cast<uintptr_t>(p))) return free_slow(p);  // null, huge, not zmm's
    Chunk* c = Chunk::of(p);
    if (c->heap != h) return free_other_heap(p);
    // h's own chunk, not in its cache (a slot two chunks share, or a heap
    // of more chunks than slots): cached now, the fast path again. (One of
    // h's cached chunks, empty: a stale pointer, the slow path's.)
    if (!h->owns_chunk_of(p)) return free_slow(p);
    h->remember_chunk(c);
    if (__builtin_expect(h->try_free_small(p) == Heap::k_fast_freed, 1)) return;
    free_slow(p);
}

void free_slow(void* p) {
    if (p == nullptr) return;
    if (reentry::inside()) {
        if (!reentry::free(p)) free_foreign(p);
        return;
    }
    Busy_section busy;
    free_inside(p);
}

namespace {
// A sized delete whose size does not fit the block: reported once per call
// site (the return address); the block is then freed by what zmm knows of it.
__attribute__((noinline, cold)) void report_wrong_size(void* p, size_t size, const void* site) {
    static const void* reported[64];
    static unsigned count;
    for (unsigned i = 0; i < count; ++i)
        if (reported[i] == site) return;
    if (count < 64) reported[count++] = site;
    Text t;
    t.str("zmm: sized delete with a wrong size for ").hex(reinterpret_cast<uintptr_t>(p)).str(" (")
        .dec(size).str(" bytes, the block has ").dec(Heap::usable_size(p)).str("), called from ")
        .hex(reinterpret_cast<uintptr_t>(site)).chr('\n');
    int fd = report_open();
    t.flush(fd);
    report_close(fd);
}
}  // namespace

__attribute__((noinline)) void free_sized_uncached(void* p, size_t size, const void* site, Heap* h) {
    prefetch_traced_entry(p, h);
    if (!is_chunk_granule(reinterpret_cast<uintptr_t>(p))) return free_sized_slow(p, size, site);
    Chunk* c = Chunk::of(p);
    if (c->heap == h) {  // as free_uncached
        if (!h->owns_chunk_of(p)) return free_sized_slow(p, size, site);
        h->remember_chunk(c);
        if (__builtin_expect(h->try_free_small_sized(p, size) == Heap::k_fast_freed, 1)) return;
        return free_sized_slow(p, size, site);
    }
    // (A small page's map word names its bin: the claim fits when the size
    // is of that bin, as size_matches has it. Anything else is the slow
    // path's, which reports a wrong size; an interior pointer is diagnosed
    // on either path. Under ZMM_DEBUG a block's bin holds its canary too.)
    const uint32_t info = c->map[Chunk::page_of(p)];
    if (!options().debug && (info & k_small) && size <= k_max_small && small_bin(info) == size_to_bin(size))
        return free_other_heap(p);
    free_sized_slow(p, size, site);
}

namespace {
// Does a sized delete's `size` fit p (not null)?
bool size_fits(void* p, size_t size) {
    if (!options().debug) return Heap::size_matches(p, size);
    // ZMM_DEBUG: the size asked for, when this thread's table has it (it
    // must be that size exactly); else the block holds a canary after it,
    // unless a signal handler's allocation (the reentry heap's: none).
    const size_t asked = debug_checks::requested_size(p, thread_token());
    if (asked != Heap::usable_size(p)) return size == asked;
    return Heap::size_matches(p, size) ||
           (size <= SIZE_MAX - debug_checks::k_canary_bytes &&
            Heap::size_matches(p, size + debug_checks::k_canary_bytes));
}
}  // namespace

void free_sized_slow(void* p, size_t size, const void* site) {
    if (p && !size_fits(p, size)) report_wrong_size(p, size, site);
    free(p);
}

void* calloc(size_t n, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
        errno = ENOMEM;
        return nullptr;
    }
    if (bytes <= k_max_small) {
        void* p = malloc_fast(bytes);
        if (!p) p = malloc_slow(bytes, __builtin_frame_address(0));  // (this frame has one anyway)
        if (p) memset(p, 0, bytes);
        return p;
    }
    if (reentry::inside()) return reentered_alloc(bytes, 0, true);
    Busy_section busy;
    Heap* h = thread_heap();
    if (!h) {
        if (bypassed()) return libc::functions().calloc(n, size);
        errno = ENOMEM;
        return nullptr;
    }
    if (options().debug) {
        void* p = malloc_inside(bytes, __builtin_frame_address(0));
        if (p) memset(p, 0, bytes);
        return p;
    }
    void* p = h->alloc_zeroed(bytes);
    if (h->request) trace_allocation(h, p, bytes, __builtin_frame_address(0));
    return p;
}

size_t usable_size(const void* p) {
    if (p == nullptr) return 0;
    if (size_t n = Heap::usable_size(p)) return n;
    if (glibc_heap::owns(p)) return glibc_heap::usable_size(p);
    return 0;
}

// realloc but what its fast path took (api.hpp, Heap::try_realloc_small).
void* realloc_slow(void* p, size_t size) {
    if (p == nullptr) return malloc(size);
    if (size == 0) {  // glibc: frees and returns NULL
        free(p);
        return nullptr;
    }
    const bool ours = Heap::owner_of(p) != nullptr;
    if (reentry::inside() && ours) return reentry::realloc(p, size);
    Busy_section busy;
    if (ours && options().debug) {  // always a new block: the old one is checked and poisoned
        // The allocation below drains the heap's remote stacks first: were p
        // there (freed already by another thread), it could come back as the
        // new block. Drained now, a p that is no longer live is the free's
        // to diagnose.
        if (Heap* h = thread_heap()) h->drain_remote();
        if (!debug_checks::is_live(p)) {
            free_inside(p);
            return nullptr;
        }
        size_t old = debug_checks::requested_size(p, thread_token());
        void* q = malloc_inside(size, __builtin_frame_address(0));
        if (!q) return nullptr;
        memcpy(q, p, old < size ? old : size);
        free_inside(p);
        return q;
    }
    if (ours) {
        if (Heap* h = thread_heap()) {
            void* q = h->realloc(p, size);
            if (h->request) trace_reallocation(h, p, q, size, __builtin_frame_address(0));
            return q;
        }
        // bypassed, and the block is still zmm's: move it to glibc
        void* fresh = libc::functions().malloc(size);
        if (!fresh) return nullptr;
        size_t old = Heap::usable_size(p);
        memcpy(fresh, p, old < size ? old : size);
        free_inside(p);
        return fresh;
    }
    if (Heap::claims(p)) {
        // A freed huge block, an interior pointer: diagnosed as its free
        // would be, here (a free would ask the registry again, which
        // another thread may be changing, and could hand p to glibc).
        if (__builtin_expect(options().debug, 0)) debug_checks::on_free(p, thread_token());
        Heap::diagnose_not_a_block(p);
    }
    if (glibc_heap::owns(p) || bypassed()) return libc::functions().realloc(p, size);
    misuse(Misuse::unknown_pointer, p, "realloc");
}

void* aligned(size_t alignment, size_t size) {
    if (reentry::inside()) return reentered_alloc(size, alignment, false);
    Busy_section busy;
    Heap* h = thread_heap();
    if (!h) {
        if (bypassed()) return libc::functions().memalign(alignment, size);
        errno = ENOMEM;
        return nullptr;
    }
    if (options().debug) {
        h->drain_remote();  // (as malloc_inside)
        void* p = size <= SIZE_MAX - debug_checks::k_canary_bytes
                      ? h->alloc_aligned(alignment, size + debug_checks::k_canary_bytes)
                      : nullptr;
        debug_checks::on_alloc(*h, p, size);
        if (h->request) trace_allocation(h, p, size, __builtin_frame_address(0));
        return p;
    }
    void* p = h->alloc_aligned(alignment, size);
    if (h->request) trace_allocation(h, p, size, __builtin_frame_address(0));
    return p;
}

}  // namespace zmm::api

using namespace zmm;

// ---- the malloc family ----

ZMM_EXPORT void* malloc(size_t size) { return api::malloc(size); }
ZMM_EXPORT void free(void* p) { api::free(p); }
ZMM_EXPORT void* calloc(size_t n, size_t size) { return api::calloc(n, size); }
ZMM_EXPORT void* realloc(void* p, size_t size) { return api::realloc(p, size); }

ZMM_EXPORT void* reallocarray(void* p, size_t n, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
        errno = ENOMEM;
        return nullptr;
    }
    return api::realloc(p, bytes);
}

static bool power_of_two(size_t a) { return a != 0 && (a & (a - 1)) == 0; }

ZMM_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
    if (!power_of_two(alignment) || alignment % sizeof(void*) != 0) return EINVAL;
    int saved = errno;
    void* p = api::aligned(alignment, size);
    if (!p) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

ZMM_EXPORT void* aligned_alloc(size_t alignment, size_t size) {
    if (!power_of_two(alignment)) {
        errno = EINVAL;
        return nullptr;
    }
    return api::aligned(alignment, size);
}

ZMM_EXPORT void* memalign(size_t alignment, size_t size) {
    // glibc: a non-power-of-two alignment is rounded up; absurd ones fail.
    if (alignment > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return nullptr;
    }
    if (!power_of_two(alignment)) alignment = alignment < 16 ? 16 : size_t{1} << (64 - __builtin_clzll(alignment));
    return api::aligned(alignment, size);
}

ZMM_EXPORT void* valloc(size_t size) { return api::aligned(k_page_size, size); }

ZMM_EXPORT void* pvalloc(size_t size) {
    size_t rounded = (size + k_page_size - 1) & ~(k_page_size - 1);
    if (rounded < size) {
        errno = ENOMEM;
        return nullptr;
    }
    return api::aligned(k_page_size, rounded ? rounded : k_page_size);
}

ZMM_EXPORT size_t malloc_usable_size(void* p) { return api::usable_size(p); }
ZMM_EXPORT void cfree(void* p) { api::free(p); }
ZMM_EXPORT void free_sized(void* p, size_t) { api::free(p); }
ZMM_EXPORT void free_aligned_sized(void* p, size_t, size_t) { api::free(p); }

// glibc's internal names, for programs that call them to reach "the real"
// allocator: they reach zmm, which hands glibc's own blocks back to glibc.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
ZMM_EXPORT void* __libc_malloc(size_t) __attribute__((alias("malloc")));
ZMM_EXPORT void __libc_free(void*) __attribute__((alias("free")));
ZMM_EXPORT void* __libc_calloc(size_t, size_t) __attribute__((alias("calloc")));
ZMM_EXPORT void* __libc_realloc(void*, size_t) __attribute__((alias("realloc")));
ZMM_EXPORT void* __libc_memalign(size_t, size_t) __attribute__((alias("memalign")));
ZMM_EXPORT void* __libc_valloc(size_t) __attribute__((alias("valloc")));
ZMM_EXPORT void* __libc_pvalloc(size_t) __attribute__((alias("pvalloc")));
ZMM_EXPORT int __posix_memalign(void**, size_t, size_t) __attribute__((alias("posix_memalign")));
#pragma GCC diagnostic pop

// ---- glibc's malloc extensions, with zmm's figures ----

// Under the bypass each of these is glibc's own.
ZMM_EXPORT int mallopt(int param, int value) {
    if (bypassed()) return libc::functions().mallopt ? libc::functions().mallopt(param, value) : 0;
    return 1;  // accepted, no effect: zmm has no tunables of glibc's kind (documented)
}

ZMM_EXPORT struct mallinfo2 mallinfo2() {
    struct mallinfo2 m{};
    if (bypassed()) {
        using Fn = struct mallinfo2 (*)();
        if (void* f = libc::functions().mallinfo2) return reinterpret_cast<Fn>(f)();
        return m;
    }
    Heap_stats s;
    heap_pool::total_stats(s);
    m.arena = s.real_size - s.huge_in_use_bytes;
    m.ordblks = static_cast<size_t>(s.cached_chunks);
    m.hblks = 0;
    m.hblkhd = s.huge_in_use_bytes;
    m.usmblks = 0;
    m.uordblks = s.size;
    m.fordblks = s.real_size > s.size ? s.real_size - s.size : 0;
    m.keepcost = s.cached_chunks * k_chunk_size;
    return m;
}

ZMM_EXPORT struct mallinfo mallinfo() {
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m{};
    m.arena = static_cast<int>(m2.arena);
    m.ordblks = static_cast<int>(m2.ordblks);
    m.hblkhd = static_cast<int>(m2.hblkhd);
    m.uordblks = static_cast<int>(m2.uordblks);
    m.fordblks = static_cast<int>(m2.fordblks);
    m.keepcost = static_cast<int>(m2.keepcost);
    return m;
}

ZMM_EXPORT int malloc_trim(size_t pad) {
    if (bypassed()) return libc::functions().malloc_trim ? libc::functions().malloc_trim(pad) : 0;
    // (A signal handler's trim leaves alone the outbox of the free it interrupted.)
    bool reentered = reentry::inside();
    Busy_section busy;
    if (Heap* own = t_state.persistent; own && !reentered) own->flush_outbox();
    return heap_pool::collect_all(t_heap == &g_empty_heap ? nullptr : t_heap) > 0 ? 1 : 0;
}

ZMM_EXPORT void malloc_stats() {
    if (bypassed()) {
        if (libc::functions().malloc_stats) libc::functions().malloc_stats();
        return;
    }
    Heap_stats s;
    heap_pool::total_stats(s);
    Text t;
    t.str("Arena 0:\nsystem bytes     = ").dec(s.real_size).str("\nin use bytes     = ").dec(s.size)
        .str("\nTotal (incl. mmap):\nsystem bytes     = ").dec(s.real_size).str("\nin use bytes     = ")
        .dec(s.size).str("\nmax mmap regions = ").dec(s.chunks).str("\nmax mmap bytes   = ")
        .dec(s.real_peak).chr('\n');
    t.flush(2);
}

ZMM_EXPORT int malloc_info(int options, FILE* out) {
    if (bypassed() && libc::functions().malloc_info) return libc::functions().malloc_info(options, out);
    if (options != 0) {
        errno = EINVAL;
        return -1;
    }
    Heap_stats s;
    heap_pool::total_stats(s);
    Text t;
    t.str("<malloc version=\"zmm-1\">\n<heap nr=\"0\">\n<sizes>\n");
    for (unsigned b = 0; b < k_bins; ++b)
        if (s.small_in_use[b])
            t.str("  <size from=\"").dec(b ? k_bin_size[b - 1] + 1 : 0).str("\" to=\"").dec(k_bin_size[b])
                .str("\" total=\"").dec(s.small_in_use[b] * k_bin_size[b]).str("\" count=\"")
                .dec(s.small_in_use[b]).str("\"/>\n");
    t.str("</sizes>\n<total type=\"mmap\" count=\"").dec(s.chunks + s.cached_chunks).str("\" size=\"")
        .dec(s.real_size).str("\"/>\n<system type=\"current\" size=\"").dec(s.real_size)
        .str("\"/>\n<system type=\"max\" size=\"").dec(s.real_peak).str("\"/>\n</heap>\n</malloc>\n");
    fwrite(t.data(), 1, t.size(), out);
    return 0;
}

// ---- dlopen (no RTLD_DEEPBIND under zmm) and dlclose ----
//
// A library opened with RTLD_DEEPBIND binds malloc/free to glibc's before
// the preloaded ones, then frees zmm's blocks with glibc's free (Debian's PHP
// does this with its default extensions; it crashes under every preloaded
// allocator). Clearing the flag makes such a library use zmm like everything
// else. The call is a tail call, so glibc still sees the real caller's return
// address (it resolves the caller's RUNPATH and namespace from it).
//
// Before it loads, and around dlclose: an object unloaded since the last
// look (by dlclose, or by glibc itself: iconv's modules) leaves its addresses
// to other code, which the unwinders and the depot must not take for the old
// (backtrace::check_unloads; the look before dlclose sees the objects loaded
// since the last one). Only where backtraces are captured, and never from
// inside zmm (a library zmm loads for itself, inside a loader crossing).
static void look_for_unloads() {
    if (backtrace::prepared() && !reentry::inside() && !loader::in_use()) backtrace::check_unloads();
}

ZMM_EXPORT void* dlopen(const char* file, int mode) {
    auto real = libc::functions().dlopen;
    if (__builtin_expect(real == nullptr, 0)) return nullptr;
    if (!bypassed()) mode &= ~RTLD_DEEPBIND;
    look_for_unloads();
    return real(file, mode);
}

ZMM_EXPORT int dlclose(void* handle) {
    auto real = libc::functions().dlclose;
    if (__builtin_expect(real == nullptr, 0)) return -1;
    look_for_unloads();
    int r = real(handle);
    look_for_unloads();
    return r;
}
