// libFuzzer harness for core's zmm::Heap: the input is a program of heap
// operations, run against a model of what must be true.
//
// The model is a table of live blocks (address, requested size, usable size,
// owning heap, the seed of the pattern written into it) and of blocks freed
// from another "thread" that wait on a heap's remote stack, or (small blocks
// of a thread's heap, freed by the other thread) in that thread's outbox
// chain and then on the owner's per-bin stack. After every
// operation the harness checks what it touched (pattern intact, usable size,
// alignment, owner, no overlap with any other block) and the heaps'
// accounting (size is the sum of the usable sizes the model holds for that
// heap; dirty pages, cached chunks, huge bytes and real_size agree with the
// lists). Every few operations it checks every block and Heap::check(); at
// the end it frees everything, expects size == 0, releases the heaps and
// expects real_size == 0.
//
// Two targets share this interpreter:
//   fuzz_heap   one heap (thread A) plus a thread B that owns no heap: its
//               frees go onto A's remote stack.
//   fuzz_heaps  heaps A and B (two threads, taking chains) and a request
//               heap R of thread A (request begin/end: release_blocks or
//               merge_into A, as control/request.cpp does); cross-heap frees
//               (through the freeing thread's outbox) and reallocs,
//               flush_outbox, drain_remote.
//
// Input layout: 2 configuration bytes (purge budget, chunk cache, huge
// pages, memory limit), then operations: one opcode byte (bit 7: which
// thread; the rest: the operation) followed by its argument bytes. Missing
// bytes read as zero; the program stops when the input is used up.
//
// ZMM_FUZZ_TRACE=1 prints every operation (to turn a crash input into a
// readable reproduction).
#pragma once

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block_table.hpp"
#include "heap.hpp"
#include "reachability.hpp"

namespace zmm::fuzz {

// ---- bounds that keep one input fast ----
inline constexpr unsigned k_max_live = 64;          // live blocks in the model
inline constexpr unsigned k_max_pending = 64;       // blocks on remote stacks
inline constexpr size_t k_max_request = 16u << 20;  // largest request (huge)
inline constexpr size_t k_max_live_bytes = 64u << 20;
inline constexpr unsigned k_check_every = 16;       // ops between full checks

// ---- the pattern written into blocks ----
// Blocks up to k_full_bytes are written and checked whole; bigger ones at the
// head and the tail (k_window bytes each) and k_stamp bytes at the start of
// about k_stamps evenly spaced pages, so that a 16 MiB block costs about 64
// page faults, not 4096.
inline constexpr size_t k_full_bytes = 16u << 10;
inline constexpr size_t k_window = 4096;
inline constexpr size_t k_stamps = 64;
inline constexpr size_t k_stamp = 64;

// The pattern loops are the harness's own hot spot: no sanitizer checks and
// no coverage feedback there (zmm's memory is not ASan's to check anyway).
#define ZMM_FUZZ_FAST __attribute__((no_sanitize("address", "undefined", "coverage")))

ZMM_FUZZ_FAST inline uint64_t pattern_word(uint64_t seed, size_t word) {
    uint64_t x = (seed + word) * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29) ^ seed;
}

// Calls f(offset, length) for each region of a block of `usable` bytes that
// is written and checked, cut at `limit` bytes.
template <class F>
void for_regions(size_t usable, size_t limit, F f) {
    size_t n = usable < limit ? usable : limit;
    if (n == 0) return;
    if (usable <= k_full_bytes) return f(size_t{0}, n);
    f(size_t{0}, n < k_window ? n : k_window);
    size_t tail = usable - k_window;
    size_t stride = (usable / k_stamps + 4095) & ~size_t{4095};
    for (size_t off = stride; off + k_stamp <= tail && off < n; off += stride)
        f(off, n - off < k_stamp ? n - off : k_stamp);
    if (tail < n) f(tail, n - tail);
}

// Regions start at multiples of 8 (usable sizes are multiples of 16).
ZMM_FUZZ_FAST inline void fill_region(char* p, uint64_t seed, size_t off, size_t len) {
    size_t w = off / 8, end = off + len;
    for (; w * 8 + 8 <= end; ++w) {
        uint64_t v = pattern_word(seed, w);
        __builtin_memcpy(p + w * 8, &v, 8);
    }
    if (w * 8 < end) {
        uint64_t v = pattern_word(seed, w);
        for (size_t i = 0; w * 8 + i < end; ++i) p[w * 8 + i] = static_cast<char>(v >> (8 * i));
    }
}

// Offset of the first wrong byte, or SIZE_MAX.
ZMM_FUZZ_FAST inline size_t check_region(const char* p, uint64_t seed, size_t off, size_t len) {
    size_t w = off / 8, end = off + len;
    for (; w * 8 < end; ++w) {
        uint64_t v = pattern_word(seed, w), got = 0;
        size_t n = end - w * 8 < 8 ? end - w * 8 : 8;
        if (n == 8) {
            __builtin_memcpy(&got, p + w * 8, 8);
        } else {
            for (size_t i = 0; i < n; ++i) got |= uint64_t{static_cast<unsigned char>(p[w * 8 + i])} << (8 * i);
            v &= (uint64_t{1} << (8 * n)) - 1;
        }
        if (got != v)
            for (size_t i = 0; i < n; ++i)
                if (reinterpret_cast<const unsigned char*>(&got)[i] != reinterpret_cast<const unsigned char*>(&v)[i])
                    return w * 8 + i;
    }
    return SIZE_MAX;
}

ZMM_FUZZ_FAST inline size_t first_nonzero(const char* p, size_t len) {
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        __builtin_memcpy(&v, p + i, 8);
        if (v) break;
    }
    for (; i < len; ++i)
        if (p[i]) return i;
    return SIZE_MAX;
}

// ---- input ----
struct Reader {
    const uint8_t* p;
    size_t n;
    bool done() const { return n == 0; }
    uint8_t u8() {
        if (!n) return 0;
        --n;
        return *p++;
    }
    uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
    uint32_t u32() { return u16() | static_cast<uint32_t>(u16()) << 16; }
};

inline constexpr size_t round_pages(size_t n) { return (n + k_page_size - 1) & ~(k_page_size - 1); }

// A request size, biased to the sizes where the allocator changes its mind:
// bin edges, page multiples, the small/large/huge limits.
inline size_t fuzz_size(Reader& in) {
    static constexpr size_t edges[] = {
        0, 1, 8, 15, 16, 17, 31, 32, 33, 48, 64, 65, 256, 257, 3071, 3072, 3073,
        4095, 4096, 4097, 4368, 4607, 4608, 4609, 7168, 7169, 8191, 8192, 8193, 16384, k_max_large - 4096, k_max_large - 1, k_max_large,
        k_max_large + 1, k_chunk_size - 1, k_chunk_size, k_chunk_size + 1,
        k_chunk_size + k_page_size, 2 * k_chunk_size, 2 * k_chunk_size + 1, 8u << 20,
        k_max_request};
    uint8_t kind = in.u8();
    switch (kind % 16) {
    case 0: case 1: case 2: case 3: case 4: case 5:
        return in.u16() % (k_max_small + 1);
    case 6: case 7:
        return in.u8();
    case 8: {  // a bin's size, one under or one over
        unsigned b = in.u8() % k_bins;
        size_t s = k_bin_size[b] + (in.u8() % 3) - 1;
        return s > k_max_request ? 0 : s;
    }
    case 9:
        return edges[in.u8() % (sizeof edges / sizeof edges[0])];
    case 10: case 11:
        return k_max_small + 1 + in.u32() % (k_max_large - k_max_small);
    case 12: {  // pages, one byte under or over
        size_t pages = in.u16() % (k_chunk_pages + 8) + 1;
        return pages * k_page_size + (in.u8() % 3) - 1;
    }
    case 13:
        return k_max_large + 1 + in.u32() % (4 * k_chunk_size);
    case 14:
        return k_max_large + 1 + in.u32() % (k_max_request - k_max_large);
    default: {  // a huge page multiple
        size_t pages = in.u16() % (k_max_request / k_page_size) + 1;
        return pages * k_page_size < k_max_large ? pages * k_page_size + k_max_large : pages * k_page_size;
    }
    }
}

// What Heap::alloc / realloc give for `size` (ZendMM's rounding).
inline size_t expected_usable(size_t size) {
    if (size <= k_max_small) return k_bin_size[size_to_bin(size)];
    return round_pages(size);
}

// ---- the model ----
enum Heap_id : uint8_t { heap_a = 0, heap_b = 1, heap_r = 2, k_heaps = 3 };

struct Block {
    char* p;
    size_t req;
    size_t usable;
    uint64_t seed;
    uint8_t heap;  // accounting owner: the heap whose size counts it
    bool carried;  // left live by an earlier request of heap R (in `carried`)
};

// Freed by a thread that does not own the block's heap: on a remote stack.
struct Pending {
    char* p;
    size_t usable;
    uint8_t heap;   // accounting owner
    uint8_t stack;  // whose remote stack it was pushed onto
    bool carried;
    uint8_t sender;  // chained: the heap whose outbox took it (k_heaps: not chained)
};

enum class Mode { single, multi };

struct World {
    Heap heaps[k_heaps];  // A, B, R (Heap is 64-aligned)
    char tokens[2];       // thread A's and thread B's identity
    Mode mode;
    bool in_request;
    bool r_retired;
    size_t r_limit;  // the request heap's limit at each request begin
    bool trace;
    bool avoid_known_bugs;  // steer around the bugs listed in README.md (ZMM_FUZZ_KNOWN_BUGS=1: don't)
    unsigned op;
    Block live[k_max_live];
    unsigned n_live;
    Pending pending[k_max_pending];
    unsigned n_pending;
    // Heap R's table while it carries blocks (control/request.cpp's untraced
    // requests: an end that keeps the heap, its live blocks carried).
    Block_table carried;
    size_t live_bytes;
    uint64_t next_seed;
    unsigned sweep;

    // ---- failure ----
    [[noreturn]] __attribute__((format(printf, 2, 3))) void fail(const char* fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "zmm-fuzz: FAILED at operation %u: ", op);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        abort();
    }
    __attribute__((format(printf, 2, 3))) void log(const char* fmt, ...) {
        if (!trace) return;
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "[%u] ", op);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    static const char* heap_name(unsigned h) { return h == heap_a ? "A" : h == heap_b ? "B" : "R"; }

    // ---- who is who ----
    const void* token(unsigned thread) const { return &tokens[thread]; }
    unsigned thread_of(unsigned heap) const { return heap == heap_b ? 1 : 0; }
    // The heap a thread allocates from; k_heaps if it has none.
    unsigned heap_of_thread(unsigned thread) const {
        if (thread == 1) return mode == Mode::multi ? heap_b : k_heaps;
        return in_request ? heap_r : heap_a;
    }
    bool heap_active(unsigned h) const {
        return h == heap_a || (mode == Mode::multi && (h == heap_b || r_retired));
    }
    unsigned index_of(const Heap* h) const {
        for (unsigned i = 0; i < k_heaps; ++i)
            if (h == &heaps[i]) return i;
        return k_heaps;
    }

    // ---- setup ----
    void begin(Mode m, Reader& in) {
        static const size_t budgets[] = {4096, 0, 1, 16, 64, 512, 4096, 8192};
        static const unsigned caches[] = {16, 0, 1, 4};
        static const size_t limits[] = {SIZE_MAX, SIZE_MAX, 8u << 20, 40u << 20};
        uint8_t c0 = in.u8(), c1 = in.u8();
        g_tuning.dirty_budget_pages = budgets[c0 & 7];
        g_tuning.cached_chunks = caches[(c0 >> 3) & 3];
        g_tuning.huge_pages = (c0 >> 5) & 1;
        size_t limit = limits[(c0 >> 6) & 3];
        mode = m;
        in_request = r_retired = false;
        trace = getenv("ZMM_FUZZ_TRACE") != nullptr;
        avoid_known_bugs = getenv("ZMM_FUZZ_KNOWN_BUGS") == nullptr;
        op = 0;
        n_live = n_pending = 0;
        live_bytes = 0;
        next_seed = uint64_t{c1} << 56 | 1;
        sweep = 0;
        for (unsigned i = 0; i < k_heaps; ++i) {
            heaps[i].init(0x5bd1e9955bd1e995ull);
            heaps[i].owner.store(token(thread_of(i)));
            heaps[i].takes_chains = m == Mode::multi && i != heap_r;  // (threads' persistent heaps)
        }
        g_tuning.batch_remote_frees = true;
        // control gives the limit to request heaps; a single heap gets it itself
        r_limit = limit;
        if (m == Mode::single) heaps[heap_a].limit = limit;
        log("config: dirty budget %zu pages, %u cached chunks, huge pages %d, limit %zu", g_tuning.dirty_budget_pages,
            g_tuning.cached_chunks, g_tuning.huge_pages, limit);
    }

    // ---- checks ----
    void check_block(const Block& b, const char* when) {
        for_regions(b.usable, b.usable, [&](size_t off, size_t len) {
            size_t bad = check_region(b.p, b.seed, off, len);
            if (bad != SIZE_MAX)
                fail("%s: block %p (req %zu, usable %zu, heap %s) corrupted at offset %zu", when, b.p, b.req,
                     b.usable, heap_name(b.heap), bad);
        });
        size_t u = Heap::usable_size(b.p);
        if (u != b.usable) fail("%s: usable_size(%p) = %zu, was %zu", when, b.p, u, b.usable);
        Heap* owner = Heap::owner_of(b.p);
        if (owner != &heaps[b.heap])
            fail("%s: owner_of(%p) is heap %s, expected %s", when, b.p, heap_name(index_of(owner)), heap_name(b.heap));
    }

    void check_all(const char* when) {
        for (unsigned i = 0; i < n_live; ++i) check_block(live[i], when);
    }

    // A few blocks per operation, in turn.
    void check_some() {
        for (unsigned k = 0; k < 2 && n_live; ++k) check_block(live[sweep++ % n_live], "sweep");
    }

    void check_no_overlap(const char* p, size_t usable) {
        for (unsigned i = 0; i < n_live; ++i)
            if (p < live[i].p + live[i].usable && live[i].p < p + usable)
                fail("new block %p+%zu overlaps live block %p+%zu", p, usable, live[i].p, live[i].usable);
        for (unsigned i = 0; i < n_pending; ++i)
            if (p < pending[i].p + pending[i].usable && pending[i].p < p + usable)
                fail("new block %p+%zu overlaps block %p+%zu still on heap %s's remote stack", p, usable,
                     pending[i].p, pending[i].usable, heap_name(pending[i].stack));
    }

    static bool on_list(const Free_slot* s, const void* p) {
        for (unsigned n = 0; s && n < 100000; s = s->next, ++n)
            if (s == p) return true;
        return false;
    }
    // A chained block still in its sender's outbox or on its heap's bin stack.
    bool in_chain(const Pending& b) const {
        unsigned bin = size_to_bin(b.usable);
        return on_list(heaps[b.sender].outbox[bin].head, b.p) ||
               on_list(heaps[b.stack].remote_bins[bin].chains.load(std::memory_order_relaxed), b.p);
    }
    bool in_outbox(const Pending& b) const {
        return b.sender != k_heaps && on_list(heaps[b.sender].outbox[size_to_bin(b.usable)].head, b.p);
    }

    // A heap's remote stack empty means whatever the model had on it was
    // drained (allocation slow paths and collect() drain on their own); a
    // chained block is taken when it is neither in an outbox nor on a stack.
    void sync_remote() {
        for (unsigned i = 0; i < n_pending;) {
            Heap& s = heaps[pending[i].stack];
            bool taken = pending[i].sender != k_heaps ? !in_chain(pending[i])
                                                      : s.remote.load(std::memory_order_relaxed) == nullptr;
            if (taken) {
                live_bytes -= pending[i].usable;
                pending[i] = pending[--n_pending];
            } else {
                ++i;
            }
        }
    }

    // Counters against lists and against the model.
    void check_accounting(const char* when) {
        for (unsigned id = 0; id < k_heaps; ++id) {
            if (!heap_active(id)) continue;
            Heap& h = heaps[id];
            size_t model = 0;
            for (unsigned i = 0; i < n_live; ++i)
                if (live[i].heap == id) model += live[i].usable;
            for (unsigned i = 0; i < n_pending; ++i)
                if (pending[i].heap == id) model += pending[i].usable;
            if (h.usage() != model) fail("%s: heap %s size %zu, the model says %zu", when, heap_name(id), h.usage(), model);
            if (id == heap_r && in_request) {
                size_t own = 0;
                for (unsigned i = 0; i < n_live; ++i)
                    if (live[i].heap == id && !live[i].carried) own += live[i].usable;
                for (unsigned i = 0; i < n_pending; ++i)
                    if (pending[i].heap == id && !pending[i].carried) own += pending[i].usable;
                if (h.usage() - h.base_size != own)
                    fail("%s: the request's usage %zu (size %zu - base %zu), its own blocks add up to %zu", when,
                         h.usage() - h.base_size, h.usage(), h.base_size, own);
            }
            if (id == heap_r && h.blocks) {  // the table holds exactly the carried blocks still live
                size_t n = 0;
                for (unsigned i = 0; i < n_live; ++i)
                    if (live[i].heap == id && live[i].carried) {
                        ++n;
                        if (!carried.find(reinterpret_cast<uintptr_t>(live[i].p))) fail("%s: carried %p is not in the table", when, live[i].p);
                        if (!Heap::may_be_carried(live[i].p)) fail("%s: carried %p is not marked", when, live[i].p);
                    }
                for (unsigned i = 0; i < n_pending; ++i) n += pending[i].heap == id && pending[i].carried;
                if (carried.size() != n) fail("%s: the table holds %zu blocks, %zu are carried", when, carried.size(), n);
            }
            if (h.peak < h.usage()) fail("%s: heap %s peak %zu < size %zu", when, heap_name(id), h.peak, h.usage());
            size_t dirty = 0, chunks = 0, cached = 0, huge_bytes = 0, huge_map = 0, cache_pages = 0;
            if (Chunk* c = h.chunks) {
                do {
                    dirty += c->dirty_count();
                    ++chunks;
                    c = c->next;
                } while (c != h.chunks && chunks <= h.chunks_count);
            }
            for (Chunk* c = h.cached; c && cached <= h.cached_count; c = c->next) {
                dirty += c->dirty_count();
                ++cached;
            }
            for (Huge_header* x = h.huge; x; x = x->next) {
                huge_bytes += x->size;
                huge_map += x->map_size;
            }
            for (Huge_header* x = h.huge_cache; x; x = x->next) cache_pages += x->map_size / k_page_size;
            if (chunks != h.chunks_count) fail("%s: heap %s has %zu chunks, counts %zu", when, heap_name(id), chunks, h.chunks_count);
            if (cached != h.cached_count)
                fail("%s: heap %s has %zu cached chunks, counts %zu", when, heap_name(id), cached, h.cached_count);
            if (dirty != h.dirty_pages)
                fail("%s: heap %s dirty_pages %zu, its chunks have %zu dirty pages", when, heap_name(id), h.dirty_pages, dirty);
            if (huge_bytes != h.huge_bytes)
                fail("%s: heap %s huge_bytes %zu, its huge blocks add up to %zu", when, heap_name(id), h.huge_bytes, huge_bytes);
            if (cache_pages != h.huge_cache_pages)
                fail("%s: heap %s huge_cache_pages %zu, its huge cache has %zu", when, heap_name(id), h.huge_cache_pages, cache_pages);
            size_t real = (chunks + cached) * k_chunk_size + huge_map + cache_pages * k_page_size;
            if (real != h.real_size)
                fail("%s: heap %s real_size %zu, its chunks and mappings add up to %zu", when, heap_name(id), h.real_size, real);
            if (h.real_peak < h.real_size) fail("%s: heap %s real_peak < real_size", when, heap_name(id));
            // The limit is on what the heap holds (mapped less its caches,
            // less a request's base). (A request heap may start over it.)
            if (id != heap_r && h.real_in_request() > h.limit)
                fail("%s: heap %s holds %zu, over its limit %zu", when, heap_name(id), h.real_in_request(), h.limit);
        }
    }

    void check_heaps(const char* when) {
        for (unsigned id = 0; id < k_heaps; ++id) {
            if (!heap_active(id)) continue;
            if (const char* e = heaps[id].check()) fail("%s: heap %s check(): %s", when, heap_name(id), e);
        }
    }

    // for_each_live_block must list exactly the model's blocks of heap `id`.
    void check_enumeration(unsigned id) {
        struct Ctx {
            World* w;
            unsigned id;
            unsigned seen;
        } ctx{this, id, 0};
        heaps[id].for_each_live_block(
            [](void* c, void* block, size_t size) {
                auto* x = static_cast<Ctx*>(c);
                World* w = x->w;
                for (unsigned i = 0; i < w->n_live; ++i)
                    if (w->live[i].p == block) {
                        if (w->live[i].heap != x->id)
                            w->fail("for_each_live_block(%s) lists %p of heap %s", heap_name(x->id), block,
                                    heap_name(w->live[i].heap));
                        if (w->live[i].usable != size)
                            w->fail("for_each_live_block(%s) lists %p with %zu bytes, usable is %zu",
                                    heap_name(x->id), block, size, w->live[i].usable);
                        ++x->seen;
                        return;
                    }
                w->fail("for_each_live_block(%s) lists %p+%zu, which is not live", heap_name(x->id), block, size);
            },
            &ctx);
        sync_remote();  // it drains first
        unsigned want = 0;
        for (unsigned i = 0; i < n_live; ++i) want += live[i].heap == id;
        if (ctx.seen != want) fail("for_each_live_block(%s) listed %u blocks, %u are live", heap_name(id), ctx.seen, want);
    }

    // The request end's walk (own_runs) must list every block of the
    // request's own, and only live blocks of R (carried ones it may list).
    void check_own_enumeration() {
        struct Ctx {
            World* w;
            unsigned own;
        } ctx{this, 0};
        heaps[heap_r].for_each_live_block(
            [](void* c, void* block, size_t) {
                auto* x = static_cast<Ctx*>(c);
                World* w = x->w;
                for (unsigned i = 0; i < w->n_live; ++i)
                    if (w->live[i].p == block) {
                        if (w->live[i].heap != heap_r) w->fail("own walk lists %p of heap %s", block, heap_name(w->live[i].heap));
                        x->own += !w->live[i].carried;
                        return;
                    }
                w->fail("own walk lists %p, which is not live", block);
            },
            &ctx, true);
        unsigned want = 0;
        for (unsigned i = 0; i < n_live; ++i) want += live[i].heap == heap_r && !live[i].carried;
        if (ctx.own != want) fail("own walk listed %u of the request's own blocks, %u are live", ctx.own, want);
    }

    // ---- operations ----
    void add_block(unsigned heap, char* p, size_t req, size_t align, bool exact, bool zeroed, const char* what) {
        size_t usable = Heap::usable_size(p);
        log("%s -> %p usable %zu (heap %s)", what, p, usable, heap_name(heap));
        if (usable < req || usable == 0) fail("%s: usable_size(%p) = %zu for %zu requested", what, p, usable, req);
        if (exact && usable != expected_usable(req))
            fail("%s: usable_size(%p) = %zu, expected %zu for %zu bytes", what, p, usable, expected_usable(req), req);
        uintptr_t a = reinterpret_cast<uintptr_t>(p);
        if (a % k_min_alignment) fail("%s: %p is not %zu-aligned", what, p, k_min_alignment);
        if (align && a % align) fail("%s: %p is not %zu-aligned", what, p, align);
        Heap* owner = Heap::owner_of(p);
        if (owner != &heaps[heap])
            fail("%s: owner_of(%p) is heap %s, expected %s", what, p, heap_name(index_of(owner)), heap_name(heap));
        check_no_overlap(p, usable);
        if (zeroed)  // the checked regions of the first `req` bytes
            for_regions(usable, req, [&](size_t off, size_t len) {
                size_t bad = first_nonzero(p + off, len);
                if (bad != SIZE_MAX) fail("%s: %p (usable %zu) not zero at offset %zu", what, p, usable, off + bad);
            });
        Block b{p, req, usable, next_seed++ * 0x2545F4914F6CDD1Dull, static_cast<uint8_t>(heap), false};
        for_regions(usable, usable, [&](size_t off, size_t len) { fill_region(p, b.seed, off, len); });
        live[n_live++] = b;
        live_bytes += usable;
    }

    bool room_for(size_t size) const { return n_live < k_max_live && live_bytes + size <= k_max_live_bytes; }

    void expect_enomem(unsigned heap, const char* what, size_t size) {
        log("%s(%zu) -> nullptr (errno %d)", what, size, errno);
        if (heaps[heap].limit == SIZE_MAX) fail("%s(%zu) on heap %s failed with no limit set (errno %d)", what, size, heap_name(heap), errno);
        if (errno != ENOMEM) fail("%s(%zu) failed with errno %d, not ENOMEM", what, size, errno);
    }

    // kind: 0 malloc, 1 calloc, 2 aligned
    void op_alloc(unsigned thread, int kind, Reader& in) {
        size_t align = kind == 2 ? size_t{1} << (in.u8() % 23) : 0;  // up to 4 MiB
        size_t size = fuzz_size(in);
        unsigned id = heap_of_thread(thread);
        if (id == k_heaps) id = heap_of_thread(0);
        if (!room_for(size)) return;
        Heap& h = heaps[id];
        errno = 0;
        void* p;
        const char* what = kind == 0 ? "malloc" : kind == 1 ? "calloc" : "aligned";
        log("%s(%zu%s%zu) on heap %s", what, size, kind == 2 ? ", align " : "", align, heap_name(id));
        if (kind == 0)  // the preload's fast path for small sizes
            p = size <= k_max_small ? h.alloc_small(size_to_bin(size), size) : h.alloc(size);
        else if (kind == 1)
            p = h.alloc_zeroed(size);
        else
            p = h.alloc_aligned(align, size);
        sync_remote();
        if (!p) return expect_enomem(id, what, size);
        add_block(id, static_cast<char*>(p), size, align, kind != 2 || align <= k_min_alignment, kind == 1, what);
    }

    void remove_live(unsigned i) {
        live_bytes -= live[i].usable;
        live[i] = live[--n_live];
    }

    // Frees live[i] from `thread`: the preload's path (the fast local free,
    // then free_any); `traced`, a local free of heap R's block as a traced
    // request's free takes it (Heap::free_traced: the table forgets it).
    void free_block(unsigned i, unsigned thread, bool traced = false) {
        Block b = live[i];
        if (thread_of(b.heap) != thread && n_pending >= k_max_pending) thread = thread_of(b.heap);  // keep it local
        check_block(b, "before free");
        // A slot (not a page run as big as one: an aligned 4 KiB block).
        const bool small_slot = Heap::in_small_run(b.p);
        log("free(%p) by thread %c (heap %s)", b.p, thread ? 'B' : 'A', heap_name(b.heap));
        unsigned mine = heap_of_thread(thread);
        if (traced && b.heap == heap_r && thread_of(b.heap) == thread) {
            log("  free_traced(%p)", b.p);
            heaps[heap_r].free_traced(b.p);
            if (b.carried && carried.find(reinterpret_cast<uintptr_t>(b.p))) fail("free_traced(%p): still in the table", b.p);
        } else if (mine != k_heaps && heaps[mine].free_small_fast(b.p)) {
            if (b.heap != mine) fail("free_small_fast(%p) on heap %s took a block of heap %s", b.p, heap_name(mine), heap_name(b.heap));
            if (b.carried) fail("free_small_fast(%p) took a carried block", b.p);
        } else {
            // The thread's persistent heap holds its outbox (the preload's
            // t_state.persistent); thread B has none in fuzz_heap.
            Heap* outbox = mode == Mode::multi ? &heaps[thread == 1 ? heap_b : heap_a] : nullptr;
            Heap* owner = Heap::free_any(b.p, token(thread), outbox);
            if (owner != &heaps[b.heap]) fail("free_any(%p) returned heap %s, expected %s", b.p, heap_name(index_of(owner)), heap_name(b.heap));
        }
        remove_live(i);
        if (thread_of(b.heap) != thread) {
            bool chained = mode == Mode::multi && heaps[b.heap].takes_chains && small_slot;
            uint8_t sender = chained ? static_cast<uint8_t>(thread == 1 ? heap_b : heap_a) : uint8_t{k_heaps};
            pending[n_pending++] = Pending{b.p, b.usable, b.heap, b.heap, b.carried, sender};
            live_bytes += b.usable;
            if (chained && !in_chain(pending[n_pending - 1])) fail("free(%p) by the other thread: not in a chain", b.p);
        }
    }

    void op_free(unsigned thread, Reader& in) {
        if (!n_live) return;
        const unsigned pick = in.u8();
        free_block(pick % n_live, thread, mode == Mode::multi && (pick & 0x80));
    }

    void op_free_burst(unsigned thread, Reader& in) {
        unsigned count = in.u8() % 8 + 1, start = in.u8();
        for (unsigned k = 0; k < count && n_live; ++k)
            free_block((start + k) % n_live, thread);
    }

    void op_realloc(unsigned thread, Reader& in) {
        if (!n_live) return;
        unsigned i = in.u8() % n_live;
        size_t size = fuzz_size(in);
        unsigned id = heap_of_thread(thread);
        if (id == k_heaps) id = heap_of_thread(0), thread = 0;
        Block b = live[i];
        if (live_bytes - b.usable + size > k_max_live_bytes) return;
        if (thread_of(b.heap) != thread && n_pending >= k_max_pending) return;
        check_block(b, "before realloc");
        // A page run resized in place stays a run (down to ZendMM's largest
        // bin, below zmm's largest): whole pages, where a new block of that
        // size would be a slot.
        const bool was_run = !Heap::in_small_run(b.p) && b.usable <= k_max_large;
        log("realloc(%p usable %zu, %zu) on heap %s (block of heap %s)", b.p, b.usable, size, heap_name(id), heap_name(b.heap));
        errno = 0;
        // The preload's fast path first (api::realloc), then the heap's.
        char* q = static_cast<char*>(heaps[id].try_realloc_small(b.p, size));
        if (q && (b.heap != id || b.carried))
            fail("try_realloc_small(%p) on heap %s took a %s block", b.p, heap_name(id), b.carried ? "carried" : "foreign");
        if (!q) q = static_cast<char*>(heaps[id].realloc(b.p, size));
        sync_remote();
        if (!q) {
            expect_enomem(id, "realloc", size);
            check_block(b, "after a failed realloc");
            return;
        }
        // The first min(old, new) requested bytes moved with the block.
        size_t kept = b.req < size ? b.req : size;
        for_regions(b.usable, kept, [&](size_t off, size_t len) {
            size_t bad = check_region(q, b.seed, off, len);
            if (bad != SIZE_MAX)
                fail("realloc(%p, %zu) -> %p: contents lost at offset %zu (old usable %zu)", b.p, size, q, bad, b.usable);
        });
        remove_live(i);
        if (q != b.p && thread_of(b.heap) != thread) {  // the old block went onto its heap's remote stack
            pending[n_pending++] = Pending{b.p, b.usable, b.heap, b.heap, b.carried, uint8_t{k_heaps}};
            live_bytes += b.usable;
        }
        if (q == b.p && b.heap != id) fail("realloc(%p) on heap %s kept a block of heap %s in place", b.p, heap_name(id), heap_name(b.heap));
        const bool run_in_place = q == b.p && was_run;
        if (run_in_place && Heap::usable_size(q) != round_pages(size))
            fail("realloc(%p, %zu) in place: usable %zu, expected the run's pages", q, size, Heap::usable_size(q));
        add_block(id, q, size, 0, !run_in_place, false, "realloc");
        // In place, a carried block stays carried (its table entry stays),
        // with what it grew or shrank by.
        if (q == b.p && b.carried) live[n_live - 1].carried = true;
    }

    void op_rewrite(Reader& in) {
        if (!n_live) return;
        Block& b = live[in.u8() % n_live];
        check_block(b, "before rewrite");
        b.seed = next_seed++ * 0x2545F4914F6CDD1Dull;
        for_regions(b.usable, b.usable, [&](size_t off, size_t len) { fill_region(b.p, b.seed, off, len); });
    }

    // The thread drains one of its heaps (thread A: A or, during or after
    // requests, R).
    void drain(unsigned id) {
        log("drain_remote on heap %s", heap_name(id));
        heaps[id].drain_remote();
        sync_remote();
        for (unsigned i = 0; i < n_pending; ++i) {
            bool retired_into = id == heap_a && pending[i].stack == heap_r && r_retired;
            if (in_outbox(pending[i])) continue;  // (not sent yet)
            if (pending[i].stack == id || retired_into)
                fail("drain_remote on heap %s left %p on heap %s's stack", heap_name(id), pending[i].p, heap_name(pending[i].stack));
        }
    }

    void op_drain(unsigned thread, Reader& in) {
        uint8_t which = in.u8();
        if ((which & 6) == 6 && mode == Mode::multi) {  // the thread sends its outbox's chains
            Heap& own = heaps[thread == 1 ? heap_b : heap_a];
            log("flush_outbox of thread %c", thread ? 'B' : 'A');
            own.flush_outbox();
            if (own.outbox_chains()) fail("flush_outbox left %u chains", own.outbox_chains());
            for (unsigned i = 0; i < n_pending; ++i)
                if (pending[i].sender == index_of(&own) && in_outbox(pending[i])) fail("flush_outbox kept %p", pending[i].p);
            sync_remote();
            return;
        }
        unsigned id = thread == 1 ? heap_b : (which & 1) && r_retired ? heap_r : heap_a;
        if (!heap_active(id)) id = heap_a;
        drain(id);
    }

    void op_maintenance(unsigned thread, Reader& in) {
        unsigned id = heap_of_thread(thread);
        if (id == k_heaps) id = heap_a;
        uint8_t what = in.u8();
        Heap& h = heaps[id];
        switch (what % 5) {
        case 0: log("collect on heap %s", heap_name(id)); h.collect(); break;
        case 1: log("purge(all) on heap %s", heap_name(id)); h.purge(false); break;
        case 2: {  // aged pages, keeping 0, 16, 256 or 2048 resident (a heap's own passes keep its budget)
            static constexpr size_t k_keep[4] = {0, 16, 256, 2048};
            size_t keep = k_keep[(what >> 3) % 4];
            log("purge(aged, keep %zu pages) on heap %s", keep, heap_name(id));
            h.purge(true, keep);
            break;
        }
        case 3: log("trim_cache(%u) on heap %s", (what >> 3) % 4, heap_name(id)); h.trim_cache((what >> 3) % 4); break;
        default: log("collect_runs_if_grown on heap %s", heap_name(id)); h.collect_runs_if_grown(); break;
        }
        sync_remote();
    }

    void op_verify(unsigned thread) {
        unsigned id = heap_of_thread(thread);
        if (id == k_heaps) id = heap_a;
        log("verify heap %s", heap_name(id));
        check_heaps("verify");
        check_enumeration(id);
        check_all("verify");
    }

    // The leak scan's mark over the request heap's live blocks, whatever
    // state the heaps are in: the other heaps' live blocks as roots (read by
    // their metadata, free slots skipped), and a root holding a pointer into
    // one chosen block (an interior one when the byte says so), which must
    // come out reachable. Nothing else is asserted of the other blocks: a
    // block's unwritten bytes may hold stale links that point anywhere.
    void check_reachability(uint8_t how) {
        static Leak cands[k_max_live];
        size_t n = 0;
        for (unsigned i = 0; i < n_live; ++i)
            if (live[i].heap == heap_r)
                cands[n++] = Leak{reinterpret_cast<uintptr_t>(live[i].p), live[i].req, 0, Leak_kind::live, false};
        if (n == 0) return;
        Reachability reach;
        if (!reach.prepare(cands, n)) return;
        size_t chosen = how % n;
        size_t offset = (how & 0x80) && cands[chosen].size > 1 ? cands[chosen].size - 1 : 0;
        uintptr_t root = cands[chosen].address + offset;
        reach.scan_heap(heaps[heap_a]);
        reach.scan_heap(heaps[heap_b]);
        reach.scan_root(&root, &root + 1);
        reach.classify();
        for (size_t i = 0; i < n; ++i)
            if (cands[i].kind == Leak_kind::live || cands[i].kind == Leak_kind::gone)
                fail("reachability: live block %p of R left %s", reinterpret_cast<void*>(cands[i].address),
                     cands[i].kind == Leak_kind::gone ? "gone" : "unclassified");
        if (cands[chosen].kind != Leak_kind::reachable)
            fail("reachability: a root pointing %zu bytes into %p did not reach it", offset,
                 reinterpret_cast<void*>(cands[chosen].address));
    }

    // control/request.cpp's begin_on_thread and end_on_thread, on thread A.
    void op_request(Reader& in) {
        uint8_t how = in.u8();
        Heap& a = heaps[heap_a];
        Heap& r = heaps[heap_r];
        if (!in_request) {
            log("request begin");
            if (!r_retired) {
                r.retired_next = a.retired;
                a.retired = &r;
                r_retired = true;
            } else if (r.remote.load(std::memory_order_relaxed)) {
                r.drain_remote();
                sync_remote();
            }
            size_t held = 0;  // what earlier requests left carried
            for (unsigned i = 0; i < n_live; ++i) held += live[i].heap == heap_r ? live[i].usable : 0;
            if (r.usage() != held) fail("request begin: request heap size %zu, carried %zu", r.usage(), held);
            r.reset_for_request(r_limit);
            r.request = this;  // (control's Request: only whether there is one matters to core)
            r.chunk_source = &a;
            in_request = true;
            return;
        }
        // 0, 2: merge; 1: release (ZMM_RECLAIM=1); 3: keep, live blocks carried (untraced)
        bool release = (how & 3) == 1, carry = (how & 3) == 3;
        size_t keep = (how >> 2) % 3;
        log("request end (%s, keep %zu cached chunks)", carry ? "carry" : release ? "release blocks" : "merge into A", keep);
        r.drain_remote();
        sync_remote();
        check_enumeration(heap_r);
        check_own_enumeration();
        check_reachability(how);
        if (carry) {
            // control/request.cpp's carry_new_blocks: the table, the marks.
            r.blocks = &carried;
            for (unsigned i = 0; i < n_live; ++i) {
                Block& b = live[i];
                if (b.heap != heap_r || b.carried) continue;
                if (!carried.insert(Block_info{reinterpret_cast<uintptr_t>(b.p), b.usable, 0, k_block_carried}))
                    fail("request end: the table refused %p", b.p);
                r.mark_carried(b.p);
                b.carried = true;
            }
        } else if (release) {
            r.release_blocks();
            r.blocks = nullptr;
            carried.clear();
            for (unsigned i = 0; i < n_live;)
                if (live[i].heap == heap_r)
                    remove_live(i);
                else
                    ++i;
        } else {
            r.blocks = nullptr;  // control/request.cpp's merge_into_thread_heap
            carried.clear();
            r.merge_into(a);
            for (unsigned i = 0; i < n_live; ++i)
                if (live[i].heap == heap_r) live[i].heap = heap_a, live[i].carried = false;
            for (unsigned i = 0; i < n_pending; ++i)
                if (pending[i].heap == heap_r) pending[i].heap = heap_a, pending[i].carried = false;
            a.collect_runs_if_grown();
            sync_remote();
        }
        r.trim_cache(keep);
        r.request = nullptr;
        in_request = false;
        if (!carry && r.usage() != 0) fail("request end: request heap size %zu", r.usage());
    }

    // ---- the program ----
    void step(Reader& in) {
        uint8_t code = in.u8();
        unsigned thread = code >> 7;
        unsigned kind = (code & 0x7f) % 16;
        if (mode == Mode::single && thread == 1 && kind != 6 && kind != 7 && kind != 8 && kind != 15) thread = 0;
        switch (kind) {
        case 0: case 1: case 2: op_alloc(thread, 0, in); break;
        case 3: op_alloc(thread, 1, in); break;
        case 4: case 5: op_realloc(thread, in); break;
        case 6: case 7: case 8: op_free(thread, in); break;
        case 9: op_alloc(thread, 2, in); break;
        case 10: op_rewrite(in); break;
        case 11: op_drain(thread, in); break;
        case 12: op_maintenance(thread, in); break;
        case 13: op_verify(thread); break;
        case 14:
            if (mode == Mode::multi)
                op_request(in);
            else
                op_alloc(thread, 0, in);
            break;
        default: op_free_burst(thread, in); break;
        }
        check_accounting("after the operation");
        check_some();
        if (++op % k_check_every == 0) {
            check_heaps("periodic");
            check_all("periodic");
        }
    }

    void end() {
        log("end: free everything");
        if (in_request) {
            uint8_t merge = 0;
            Reader none{&merge, 1};
            op_request(none);
        }
        check_heaps("at the end");
        check_all("at the end");
        while (n_live) free_block(n_live - 1, thread_of(live[n_live - 1].heap));
        heaps[heap_a].flush_outbox();
        heaps[heap_b].flush_outbox();
        for (unsigned id = 0; id < k_heaps; ++id)
            if (heap_active(id)) drain(id);
        sync_remote();
        if (n_pending) fail("at the end: %u blocks still on remote stacks", n_pending);
        check_accounting("at the end");
        check_heaps("at the end");
        for (unsigned id = 0; id < k_heaps; ++id) {
            Heap& h = heaps[id];
            if (h.usage() != 0) fail("at the end: heap %s size %zu with every block freed", heap_name(id), h.usage());
        }
        for (unsigned id = 0; id < k_heaps; ++id) {
            Heap& h = heaps[id];
            h.release_all();
            if (h.real_size != 0) fail("after release_all: heap %s real_size %zu", heap_name(id), h.real_size);
        }
    }
};

inline int run(Mode mode, const uint8_t* data, size_t size) {
    alignas(64) static World w;
    Reader in{data, size};
    w.begin(mode, in);
    while (!in.done()) w.step(in);
    w.end();
    return 0;
}

}  // namespace zmm::fuzz
