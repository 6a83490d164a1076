// The fast unwinder against libunwind: the same return addresses, frame by
// frame, from the same call chains of many shapes (frame pointer or not,
// alloca, large frames, unoptimised code, glibc's and libstdc++'s frames, a
// thread's stack), down to the stack's end.
#include <boost/test/unit_test.hpp>

#include <alloca.h>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <pthread.h>
#include <thread>
#include <vector>

#include "backtrace.hpp"
#include "fast_unwind.hpp"

using namespace zmm;

namespace {

using Unw_backtrace = int (*)(void**, int);

Unw_backtrace libunwind() {
    static Unw_backtrace fn = [] {
        backtrace::prepare();  // libunwind loaded and warmed up
        void* lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_NOLOAD);
        return lib ? reinterpret_cast<Unw_backtrace>(dlsym(lib, "unw_backtrace")) : nullptr;
    }();
    return fn;
}

struct Both {
    std::vector<uintptr_t> fast, general;
    int fast_n;
};

// Both unwinders from one frame. Their first entries are this function's
// two call sites; from the second on, the same callers.
__attribute__((noinline)) Both unwind_here() {
    Both b;
    uintptr_t out[64];
    b.fast_n = fast_unwind::capture(out, 64);
    if (b.fast_n > 0) b.fast.assign(out + 1, out + b.fast_n);
    void* raw[64];
    int n = libunwind()(raw, 64);
    for (int i = 1; i < n; ++i) b.general.push_back(reinterpret_cast<uintptr_t>(raw[i]));
    asm volatile("" ::: "memory");  // not a tail call
    return b;
}

Both g_result;

void check_same(const Both& b, const char* shape) {
    BOOST_TEST_INFO(shape);
    BOOST_TEST_REQUIRE(b.fast_n > 0);  // supported, not handed to libunwind
    BOOST_TEST(b.fast == b.general);
    BOOST_TEST(b.fast.size() >= 4u);
    BOOST_TEST_MESSAGE(shape << ": " << b.fast.size() << " frames");
}

__attribute__((noinline)) void leaf() { g_result = unwind_here(); }

__attribute__((noinline)) void with_alloca(unsigned depth, size_t bytes) {
    volatile char* p = static_cast<char*>(alloca(bytes));
    p[0] = 1;
    if (depth) with_alloca(depth - 1, bytes + 48);
    else leaf();
    p[0] = 2;
}

__attribute__((noinline)) void large_frame(unsigned depth) {
    char buf[6000];
    memset(buf, static_cast<int>(depth), sizeof buf);
    asm volatile("" : : "r"(buf) : "memory");  // the frame stays 6000 bytes
    if (depth) large_frame(depth - 1);
    else leaf();
    asm volatile("" : : "r"(buf) : "memory");
}

// Frames of `bytes` (a template: one function per size).
template <size_t bytes>
__attribute__((noinline)) void sized_frame(unsigned depth) {
    char buf[bytes];
    memset(buf, static_cast<int>(depth), sizeof buf);
    asm volatile("" : : "r"(buf) : "memory");
    if (depth) sized_frame<bytes>(depth - 1);
    else leaf();
    asm volatile("" : : "r"(buf) : "memory");
}

__attribute__((noinline, optimize("O0"))) void unoptimised(int depth) {
    int local[8];
    local[0] = depth;
    if (depth > 0) unoptimised(depth - 1);
    else leaf();
    (void)local;
}

__attribute__((noinline)) void many_args(long a, long b, long c, long d, long e, long f, long g, long h) {
    if (a + b + c + d + e + f + g + h > 0) leaf();
}

int compare_then_unwind(const void* x, const void* y) {
    static bool done = false;
    if (!done) {
        done = true;
        leaf();
    }
    return *static_cast<const int*>(x) - *static_cast<const int*>(y);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fast_unwind_tests)

BOOST_AUTO_TEST_CASE(same_frames_as_libunwind) {
    BOOST_TEST_REQUIRE(libunwind() != nullptr);
    leaf();
    check_same(g_result, "leaf");
    with_alloca(5, 32);
    check_same(g_result, "alloca frames");
    large_frame(3);
    check_same(g_result, "6000-byte frames");
    sized_frame<20000>(2);
    check_same(g_result, "20000-byte frames");
    unoptimised(4);
    check_same(g_result, "-O0 frames");
    many_args(1, 2, 3, 4, 5, 6, 7, 8);
    check_same(g_result, "stack arguments");
    int v[64];
    for (int i = 0; i < 64; ++i) v[i] = (i * 37) % 64;
    qsort(v, 64, sizeof v[0], compare_then_unwind);  // through glibc's frames
    check_same(g_result, "qsort's comparator");
    std::function<void()> f = [] { with_alloca(2, 100); };
    f();  // through libstdc++'s std::function
    check_same(g_result, "std::function");
}

// A thread notes its stack (the preload's pthread_create does it for the
// program's threads); one that has not is libunwind's.
void note_this_thread_s_stack() {
    pthread_attr_t a;
    void* addr;
    size_t size;
    BOOST_TEST_REQUIRE(pthread_getattr_np(pthread_self(), &a) == 0);
    BOOST_TEST_REQUIRE(pthread_attr_getstack(&a, &addr, &size) == 0);
    pthread_attr_destroy(&a);
    fast_unwind::note_thread_stack(reinterpret_cast<uintptr_t>(addr) + 4096, reinterpret_cast<uintptr_t>(addr) + size);
}

BOOST_AUTO_TEST_CASE(a_thread_without_its_stack_noted_is_libunwind_s) {
    int n = 0;
    std::thread([&] {
        uintptr_t out[64];
        n = fast_unwind::capture(out, 64);
    }).join();
    BOOST_TEST(n == -1);
}

BOOST_AUTO_TEST_CASE(on_a_thread_s_stack) {
#ifdef __SANITIZE_THREAD__
    // (libunwind's per-thread cache dies in ThreadSanitizer's thread exit:
    // the fast unwinder alone, on the thread; both on the main thread above.)
    int n = 0;
    std::thread([&] {
        note_this_thread_s_stack();
        uintptr_t out[64];
        n = fast_unwind::capture(out, 64);
    }).join();
    BOOST_TEST(n >= 4);
#else
    Both b;
    std::thread([&] {
        note_this_thread_s_stack();
        large_frame(2);
        b = g_result;
    }).join();
    check_same(b, "a thread");
#endif
}

// A frame of 64 KiB or more from the stack pointer has no rule of the
// cache's: libunwind's job. (With frame pointers, as in the sanitizer
// builds, its CFA is the frame pointer's and it is covered: the same frames.)
BOOST_AUTO_TEST_CASE(hands_huge_frames_to_libunwind) {
    sized_frame<70000>(0);
    if (g_result.fast_n == -1) {
        BOOST_TEST(g_result.general.size() >= 4u);
        BOOST_TEST(fast_unwind::stats().unsupported > 0u);
    } else {
        check_same(g_result, "a 70000-byte frame");
    }
}

// The stack's end: fewer frames than asked for, the last one libunwind's
// last; a short buffer stops early.
BOOST_AUTO_TEST_CASE(stops_at_the_end_and_at_max) {
    leaf();
    BOOST_TEST(g_result.fast.size() < 63u);
    uintptr_t out[3];
    BOOST_TEST(fast_unwind::capture(out, 3) == 3);
    BOOST_TEST(fast_unwind::stats().computed > 0u);
}

// The innermost frames inside a skipped range (the allocator's own) are
// unwound, not kept: the rest are the same return addresses.
__attribute__((noinline)) int capture_skipping(uintptr_t* out, uintptr_t lo, uintptr_t hi) {
    int n = fast_unwind::capture(out, 64, lo, hi);
    asm volatile("" ::: "memory");  // not a tail call
    return n;
}
__attribute__((noinline)) int capture_here(uintptr_t* out) {
    int n = fast_unwind::capture(out, 64);
    asm volatile("" ::: "memory");
    return n;
}

BOOST_AUTO_TEST_CASE(skips_the_innermost_frames_in_a_range) {
    uintptr_t all[64], some[64];
    int n = capture_here(all);
    BOOST_TEST_REQUIRE(n >= 3);
    // all[0] is in capture_here, all[1] where this test calls it; some[0]
    // where it calls capture_skipping, whose own frame is skipped
    const uintptr_t f = reinterpret_cast<uintptr_t>(&capture_skipping);
    int m = capture_skipping(some, f, f + 128);  // its return address is in its first bytes
    BOOST_TEST(m == n - 1);
    BOOST_TEST(some[0] != all[1]);
    for (int i = 2; i < n; ++i) BOOST_TEST(some[i - 1] == all[i]);
    // Every frame in the range: none kept
    BOOST_TEST(capture_skipping(some, 1, UINTPTR_MAX) <= 0);
    // A range that holds no innermost frame: nothing skipped
    BOOST_TEST(capture_skipping(some, 1, 2) == n);
}

// A capture from a caller's frame (the allocator's entry, for a traced
// allocation): that frame's return address first, the frames below it not
// unwound. A start that is not a frame above the capture's own in its
// stack is ignored.
__attribute__((noinline)) int capture_from(uintptr_t* out, uintptr_t start) {
    int n = fast_unwind::capture(out, 64, 0, 0, nullptr, nullptr, start);
    asm volatile("" ::: "memory");  // not a tail call
    return n;
}
__attribute__((noinline)) int inner_from(uintptr_t* out, uintptr_t start) {
    int n = capture_from(out, start);
    asm volatile("" ::: "memory");
    return n;
}
// all: every frame (all[2] here, all[3] the test); from: from this frame.
__attribute__((noinline)) int entry_frame_capture(uintptr_t* all, uintptr_t* from, int* n_from) {
    const uintptr_t me = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    int n = inner_from(all, 0);
    *n_from = inner_from(from, me);
    asm volatile("" ::: "memory");
    return n;
}
__attribute__((noinline)) void with_and_without(uintptr_t start, uintptr_t* a, int* na, uintptr_t* b,
                                                int* nb) {
    *na = inner_from(a, 0);
    *nb = inner_from(b, start);
    asm volatile("" ::: "memory");
}

BOOST_AUTO_TEST_CASE(starts_from_a_caller_s_frame) {
    uintptr_t all[64], from[64];
    int m = 0;
    const int n = entry_frame_capture(all, from, &m);
    BOOST_TEST_REQUIRE(n >= 5);
    BOOST_TEST(m == n - 3);
    for (int i = 3; i < n; ++i) BOOST_TEST(from[i - 3] == all[i]);
    // Ignored: below any frame, in static data, past the stack's end,
    // misaligned (a[2] and b[2] are with_and_without's two call sites).
    const uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    for (uintptr_t start : {uintptr_t{8}, reinterpret_cast<uintptr_t>(&g_result) & ~uintptr_t{7},
                            UINTPTR_MAX & ~uintptr_t{7}, here + 4}) {
        BOOST_TEST_INFO("start " << start);
        uintptr_t a[64], b[64];
        int na = 0, nb = 0;
        with_and_without(start, a, &na, b, &nb);
        BOOST_TEST_REQUIRE(na >= 4);
        BOOST_TEST(nb == na);
        BOOST_TEST(b[0] == a[0]);
        BOOST_TEST(b[1] == a[1]);
        BOOST_TEST(b[2] != a[2]);
        for (int i = 3; i < na && i < nb; ++i) BOOST_TEST(b[i] == a[i]);
    }
}

// Forgotten rules are computed again, and the same.
BOOST_AUTO_TEST_CASE(forgets_rules) {
    uint64_t computed[4];
    for (int i = 0; i < 4; ++i) {  // one call site: the same return addresses
        asm volatile("" : "+r"(i));  // (not unrolled)
        leaf();
        computed[i] = fast_unwind::stats().computed;
        if (i == 1) fast_unwind::forget_rules();
    }
    BOOST_TEST(computed[1] == computed[0]);  // all cached
    BOOST_TEST(computed[2] > computed[1]);   // computed again
    BOOST_TEST(computed[3] == computed[2]);
    check_same(g_result, "after forget_rules");
}

__attribute__((noinline)) void leaf_elsewhere() {  // a call site not seen before
    leaf();
    asm volatile("" ::: "memory");
}

// A library unloaded since (by dlclose here; glibc closes some itself):
// the next rule looked up forgets them all.
BOOST_AUTO_TEST_CASE(an_unload_forgets_rules) {
    uint64_t computed[3];
    for (int i = 0; i < 3; ++i) {
        asm volatile("" : "+r"(i));
        leaf();
        computed[i] = fast_unwind::stats().computed;
        if (i == 1) {
            void* lib = dlopen("libutil.so.1", RTLD_NOW | RTLD_LOCAL);
            BOOST_TEST_REQUIRE(lib != nullptr);
            BOOST_TEST_REQUIRE(dlclose(lib) == 0);
            leaf_elsewhere();  // a new return address: the loader's count is read
        }
    }
    BOOST_TEST(computed[1] == computed[0]);
    BOOST_TEST(computed[2] > computed[1] + 1);  // the old call site's rules again
    check_same(g_result, "after an unload");
}

// ---- the memo of stacks seen before (backtraces of up to 16 frames) ----

fast_unwind::Memo g_memo;  // (static storage: zeroed, as the memo must be)

struct Short {
    std::vector<uintptr_t> fast, general;
    uint64_t tag;
};

// What a caller of the memo keeps, as zmm keeps a stack's depot id: the
// frames each tag it gave stands for (a replay with a tag leaves `out`
// unwritten). Tags are given once each; `name` is what a test calls them.
struct Tag_book {
    struct Entry {
        uint64_t name;
        std::vector<uintptr_t> frames;
    };
    std::vector<Entry> entries;  // tag i + 1
    // The frames of a capture that returned n and `tag`, from `out` or the book.
    std::vector<uintptr_t> frames(const uintptr_t* out, int n, uint64_t tag) const {
        if (tag == 0) return std::vector<uintptr_t>(out, out + (n > 0 ? n : 0));
        BOOST_REQUIRE(tag <= entries.size());
        BOOST_TEST(static_cast<size_t>(n) == entries[tag - 1].frames.size());
        return entries[tag - 1].frames;
    }
    uint64_t name_of(uint64_t tag) const { return tag ? entries.at(tag - 1).name : 0; }
    // Tags the last capture, untagged, that found `frames`.
    void remember(fast_unwind::Memo& memo, uint64_t name, const std::vector<uintptr_t>& frames) {
        entries.push_back(Entry{name, frames});
        fast_unwind::remember(memo, entries.size());
    }
};
Tag_book g_book;

// Both unwinders, 16 frames, the fast one through the memo; the frames are
// tagged (named `name`) when the memo had no tag for them.
__attribute__((noinline)) Short unwind_16(uint64_t name) {
    Short b;
    uintptr_t out[16];
    uint64_t tag;
    int n = fast_unwind::capture(out, 16, 0, 0, &g_memo, &tag);
    const std::vector<uintptr_t> all = g_book.frames(out, n, tag);
    if (all.size() > 1) b.fast.assign(all.begin() + 1, all.end());
    b.tag = g_book.name_of(tag);
    if (tag == 0) g_book.remember(g_memo, name, all);
    void* raw[16];
    int m = libunwind()(raw, 16);
    for (int i = 1; i < m; ++i) b.general.push_back(reinterpret_cast<uintptr_t>(raw[i]));
    asm volatile("" ::: "memory");
    return b;
}

// Two callers of one function, alike: the same frame sizes, so that from
// the same place the first frames have the same pc and sp, and only the
// return address above tells them apart.
Short g_short;
__attribute__((noinline)) void caller_a() {
    g_short = unwind_16(0xa);
    asm volatile("" ::: "memory");
}
__attribute__((noinline)) void caller_b() {
    g_short = unwind_16(0xb);
    asm volatile("" ::: "memory");
}

BOOST_AUTO_TEST_CASE(a_stack_seen_before_is_the_memo_s) {
    BOOST_TEST_REQUIRE(libunwind() != nullptr);
    Short s[3];
    uint64_t hits[3];
    for (int i = 0; i < 3; ++i) {  // one call site: the same stack
        asm volatile("" : "+r"(i));
        caller_a();
        s[i] = g_short;
        hits[i] = g_memo.hits;
        BOOST_TEST(s[i].fast == s[i].general);
        BOOST_TEST(s[i].fast == s[0].fast);
    }
    BOOST_TEST(s[0].fast.size() == 15u);  // 16 asked for, less unwind_16's own
    BOOST_TEST(s[0].tag == 0u);           // unwound, and tagged
    BOOST_TEST(s[1].tag == 0xau);         // the memo's, with its tag
    BOOST_TEST(s[2].tag == 0xau);
    BOOST_TEST(hits[1] == hits[0] + 1);
    BOOST_TEST(hits[2] == hits[1] + 1);
}

// A replay writes the frames, unless they have a tag: the caller has them
// under it (zmm's depot id), and copying them would be time lost.
__attribute__((noinline)) int capture_16(uintptr_t* out, uint64_t* tag) {
    int n = fast_unwind::capture(out, 16, 0, 0, &g_memo, tag);
    asm volatile("" ::: "memory");  // not a tail call
    return n;
}

BOOST_AUTO_TEST_CASE(a_replay_with_a_tag_leaves_the_frames_unwritten) {
    uintptr_t out[4][16];
    uint64_t tags[4];
    int n[4];
    const uint64_t hits = g_memo.hits;
    uint64_t hits_after[4];
    // 0: unwound; 1: replayed untagged; (rules forgotten: the memo void)
    // 2: unwound again, and tagged; 3: replayed tagged. (What is done
    // around the call is called through a pointer: one call site, the same
    // stack, with no branch for the compiler to copy the call into.)
    void (*none)() = [] {};
    void (*before[4])() = {none, none, [] { fast_unwind::forget_rules(); }, none};
    void (*after[4])() = {none, none, [] { fast_unwind::remember(g_memo, 0x77); }, none};
    for (int i = 0; i < 4; ++i) {
        asm volatile("" : "+r"(i));
        for (uintptr_t& w : out[i]) w = 0x5e;
        before[i]();
        n[i] = capture_16(out[i], &tags[i]);
        hits_after[i] = g_memo.hits;
        after[i]();
    }
    BOOST_TEST_REQUIRE(n[0] > 1);
    const std::vector<uintptr_t> first(out[0], out[0] + n[0]);
    BOOST_TEST(tags[0] == 0u);
    BOOST_TEST(hits_after[0] == hits);
    BOOST_TEST(tags[1] == 0u);
    BOOST_TEST(hits_after[1] == hits + 1);
    BOOST_TEST(std::vector<uintptr_t>(out[1], out[1] + n[1]) == first);
    BOOST_TEST(tags[2] == 0u);
    BOOST_TEST(hits_after[2] == hits + 1);
    BOOST_TEST(std::vector<uintptr_t>(out[2], out[2] + n[2]) == first);
    BOOST_TEST(tags[3] == 0x77u);
    BOOST_TEST(hits_after[3] == hits + 2);
    BOOST_TEST(n[3] == n[0]);
    for (uintptr_t w : out[3]) BOOST_TEST(w == 0x5eu);
}

BOOST_AUTO_TEST_CASE(another_caller_at_the_same_place_is_unwound) {
    Short a[2], b[2];
    for (int i = 0; i < 2; ++i) {  // a, b, a, b from one loop: the same sp
        asm volatile("" : "+r"(i));
        caller_a();
        a[i] = g_short;
        caller_b();
        b[i] = g_short;
    }
    for (const Short* s : {&a[0], &a[1], &b[0], &b[1]}) {
        BOOST_TEST_REQUIRE(s->fast.size() >= 2u);
        BOOST_TEST(s->fast == s->general);
    }
    BOOST_TEST(a[0].fast[0] != b[0].fast[0]);  // the return addresses into caller_a and caller_b
    BOOST_TEST(a[1].fast == a[0].fast);
    BOOST_TEST(b[1].fast == b[0].fast);
    for (const Short* s : {&a[0], &a[1]}) BOOST_TEST((s->tag == 0u || s->tag == 0xau));  // never b's
    for (const Short* s : {&b[0], &b[1]}) BOOST_TEST((s->tag == 0u || s->tag == 0xbu));
}

// Two stacks from one place (the same first frame, pc and sp: one set),
// alternating, both stay: each set has two ways, and a miss replaces the
// one used less recently. (Direct-mapped, each would evict the other.)
BOOST_AUTO_TEST_CASE(two_stacks_from_one_place_stay_in_the_memo) {
    Short a[3], b[3];
    uint64_t hits[3];
    for (int i = 0; i < 3; ++i) {
        asm volatile("" : "+r"(i));
        const uint64_t before = g_memo.hits;
        caller_a();
        a[i] = g_short;
        caller_b();
        b[i] = g_short;
        hits[i] = g_memo.hits - before;
    }
    BOOST_TEST(hits[1] == 2u);
    BOOST_TEST(hits[2] == 2u);
    for (int i = 1; i < 3; ++i) {
        BOOST_TEST(a[i].tag == 0xau);
        BOOST_TEST(b[i].tag == 0xbu);
        BOOST_TEST(a[i].fast == a[0].fast);
        BOOST_TEST(b[i].fast == b[0].fast);
    }
}

// A stack the fast unwinder gives up on (a caller without CFI) from the
// same place as two that replay takes neither of their ways: it unwinds
// into the memo's scratch entry. (Three callers of one probe, two with CFI
// and one without, in assembly: the probe's frame is the same from each.)
extern "C" {
uint64_t g_probe_tag;
int g_probe_n;
__attribute__((noinline, used)) void zmm_test_probe() {
    uintptr_t out[16];
    g_probe_n = fast_unwind::capture(out, 16, 0, 0, &g_memo, &g_probe_tag);
    if (g_probe_n > 0 && g_probe_tag == 0) fast_unwind::remember(g_memo, 0x1000 + g_memo.hits);
    asm volatile("" ::: "memory");
}
void zmm_test_cfi_a();
void zmm_test_cfi_b();
void zmm_test_no_cfi();
}
asm(R"(
    .text
    .irp name, zmm_test_cfi_a, zmm_test_cfi_b
    .globl \name
    .type \name, @function
\name:
    .cfi_startproc
    sub $8, %rsp
    .cfi_adjust_cfa_offset 8
    call zmm_test_probe
    add $8, %rsp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .endr
    .globl zmm_test_no_cfi
    .type zmm_test_no_cfi, @function
zmm_test_no_cfi:
    sub $8, %rsp
    call zmm_test_probe
    add $8, %rsp
    ret
)");

BOOST_AUTO_TEST_CASE(a_stack_that_gives_up_keeps_out_of_the_memo_s_ways) {
    void (*callers[3])() = {zmm_test_cfi_a, zmm_test_cfi_b, zmm_test_no_cfi};
    uint64_t hits = 0, tries = 0;
    for (int i = 0; i < 30; ++i) {  // a b x a b x ...
        asm volatile("" : "+r"(i));
        const uint64_t before = g_memo.hits;
        callers[i % 3]();
        if (i % 3 == 2) {
            BOOST_TEST(g_probe_n == -1);  // (no rule for a pc without CFI)
        } else if (i >= 3) {
            ++tries;
            hits += g_memo.hits - before;
            BOOST_TEST(g_probe_tag != 0u);
        }
    }
    BOOST_TEST(hits == tries);
}

BOOST_AUTO_TEST_CASE(forgotten_rules_void_the_memo) {
    uint64_t computed[3], tags[3];
    for (int i = 0; i < 3; ++i) {
        asm volatile("" : "+r"(i));
        caller_a();
        computed[i] = fast_unwind::stats().computed;
        tags[i] = g_short.tag;
        BOOST_TEST(g_short.fast == g_short.general);
        if (i == 1) fast_unwind::forget_rules();
    }
    BOOST_TEST(tags[1] == 0xau);  // the same stack: the memo's
    BOOST_TEST(computed[1] == computed[0]);
    BOOST_TEST(tags[2] == 0u);    // unwound again, with rules computed again
    BOOST_TEST(computed[2] > computed[1]);
}

// The allocator's own frames, skipped, through the memo: their own entries,
// the same whichever program frames are above them.
__attribute__((noinline)) int capture_skipping_memo(uintptr_t* out, uint64_t* tag) {
    const uintptr_t f = reinterpret_cast<uintptr_t>(&capture_skipping_memo);
    int n = fast_unwind::capture(out, 16, f, f + 128, &g_memo, tag);  // its return address is in its first bytes
    asm volatile("" ::: "memory");  // not a tail call
    return n;
}

// Two alike callers of it (one function per `which`): the skipped frame's
// state is the same from both, and only the return address it reads tells
// the program's first frames apart.
Short g_skipped;
template <int which>
__attribute__((noinline)) void skip_caller(uint64_t name) {
    uintptr_t out[16];
    uint64_t tag;
    int n = capture_skipping_memo(out, &tag);
    g_skipped.fast = g_book.frames(out, n, tag);
    g_skipped.tag = g_book.name_of(tag);
    if (tag == 0) g_book.remember(g_memo, name, g_skipped.fast);
    void* raw[16];
    int m = libunwind()(raw, 16);  // raw[0]: here; from raw[1], this function's callers
    g_skipped.general.assign(reinterpret_cast<uintptr_t*>(raw), reinterpret_cast<uintptr_t*>(raw) + m);
    asm volatile("" ::: "memory");
}
__attribute__((noinline)) void skip_caller_a() {
    skip_caller<0>(0x5a);
    asm volatile("" ::: "memory");
}
__attribute__((noinline)) void skip_caller_b() {
    skip_caller<1>(0x5b);
    asm volatile("" ::: "memory");
}

BOOST_AUTO_TEST_CASE(skipped_frames_through_the_memo) {
    Short a[3], b[3];
    for (int i = 0; i < 3; ++i) {
        asm volatile("" : "+r"(i));
        skip_caller_a();
        a[i] = g_skipped;
        skip_caller_b();
        b[i] = g_skipped;
    }
    for (const Short* s : {&a[0], &a[1], &a[2], &b[0], &b[1], &b[2]}) {
        BOOST_TEST_REQUIRE(s->fast.size() >= 3u);
        BOOST_TEST_REQUIRE(s->general.size() >= 3u);
        // fast[0] is in skip_caller (capture_skipping_memo's frame skipped),
        // fast[1] in skip_caller_a or _b: libunwind's [1] and on from there
        BOOST_TEST(std::vector<uintptr_t>(s->fast.begin() + 1, s->fast.end()) ==
                   std::vector<uintptr_t>(s->general.begin() + 1, s->general.begin() + static_cast<long>(s->fast.size())));
    }
    BOOST_TEST(a[0].fast[0] != b[0].fast[0]);  // in skip_caller<0> and skip_caller<1>
    BOOST_TEST(a[0].fast[1] != b[0].fast[1]);
    BOOST_TEST(a[1].fast == a[0].fast);
    BOOST_TEST(b[2].fast == b[0].fast);
    // (A tag, when there is one, is the caller's own.)
    for (const Short* s : {&a[0], &a[1], &a[2]}) BOOST_TEST((s->tag == 0u || s->tag == 0x5au));
    for (const Short* s : {&b[0], &b[1], &b[2]}) BOOST_TEST((s->tag == 0u || s->tag == 0x5bu));
    // From one caller only (one call site), the memo's
    Short c[2];
    for (int i = 0; i < 2; ++i) {
        asm volatile("" : "+r"(i));
        skip_caller_a();
        c[i] = g_skipped;
    }
    BOOST_TEST(c[1].tag == 0x5au);
    BOOST_TEST(c[1].fast == c[0].fast);
#ifndef ZMM_FRAME_POINTERS
    // (Skipped chains are kept when their rules take the CFA from rsp: not
    // with frame pointers, where the frames are unwound each time.)
    BOOST_TEST(g_memo.skip_hits > 0u);
#endif
}

// Skipped chains of two frames that differ in the middle one (frames of
// other sizes), and of one: from the same innermost frame, each must be
// read as itself.
// The functions of section zmm_skip_test are the range skipped (a memo of
// its own: a memo's skipped chains are for the first range it saw).
extern "C" char __start_zmm_skip_test[], __stop_zmm_skip_test[];
fast_unwind::Memo g_memo_sections;

__attribute__((noinline, section("zmm_skip_test"))) int skip_inner(uintptr_t* out, uint64_t* tag) {
    int n = fast_unwind::capture(out, 16, reinterpret_cast<uintptr_t>(__start_zmm_skip_test),
                                 reinterpret_cast<uintptr_t>(__stop_zmm_skip_test), &g_memo_sections, tag);
    asm volatile("" ::: "memory");
    return n;
}
// Two middle frames of two sizes. (Two functions, not a template: GCC puts
// a template's instances in sections of their own, outside the range.)
__attribute__((noinline, section("zmm_skip_test"))) int skip_middle_small(uintptr_t* out, uint64_t* tag) {
    char buf[64];
    memset(buf, 1, sizeof buf);
    asm volatile("" : : "r"(buf) : "memory");
    int n = skip_inner(out, tag);
    asm volatile("" : : "r"(buf) : "memory");
    return n;
}
__attribute__((noinline, section("zmm_skip_test"))) int skip_middle_large(uintptr_t* out, uint64_t* tag) {
    char buf[2048];
    memset(buf, 2, sizeof buf);
    asm volatile("" : : "r"(buf) : "memory");
    int n = skip_inner(out, tag);
    asm volatile("" : : "r"(buf) : "memory");
    return n;
}

// way 0 and 1 through a middle frame, 2 straight into the inner one (whose
// caller is then the program's first frame).
__attribute__((noinline)) void skip_through(int way) {
    int (*fn)(uintptr_t*, uint64_t*) = way == 0 ? skip_middle_small : way == 1 ? skip_middle_large : skip_inner;
    asm volatile("" : "+r"(fn));  // one call site for all
    uintptr_t out[16];
    uint64_t tag;
    int n = fn(out, &tag);
    g_skipped.fast = g_book.frames(out, n, tag);
    if (tag == 0) g_book.remember(g_memo_sections, 1, g_skipped.fast);
    void* raw[16];
    int m = libunwind()(raw, 16);
    g_skipped.general.assign(reinterpret_cast<uintptr_t*>(raw), reinterpret_cast<uintptr_t*>(raw) + m);
    asm volatile("" ::: "memory");
}

BOOST_AUTO_TEST_CASE(skipped_chains_that_differ_in_the_middle) {
    [[maybe_unused]] const uint64_t skip_hits = g_memo_sections.skip_hits;
    for (int i = 0; i < 9; ++i) {
        asm volatile("" : "+r"(i));
        skip_through(i % 3);
        BOOST_TEST_INFO("round " << i);
        BOOST_TEST_REQUIRE(g_skipped.fast.size() >= 3u);
        BOOST_TEST_REQUIRE(g_skipped.general.size() >= g_skipped.fast.size());
        // fast[0] is where skip_through calls fn, general[0] where it calls
        // libunwind; their callers from [1] on
        BOOST_TEST(std::vector<uintptr_t>(g_skipped.fast.begin() + 1, g_skipped.fast.end()) ==
                   std::vector<uintptr_t>(g_skipped.general.begin() + 1,
                                          g_skipped.general.begin() + static_cast<long>(g_skipped.fast.size())));
    }
#ifndef ZMM_FRAME_POINTERS
    BOOST_TEST(g_memo_sections.skip_hits > skip_hits);  // each chain kept, and taken again
#endif
}

// Frames whose rules take the CFA from rbp (unoptimised code): the saved
// rbp words they read are compared too, and the memo's frames are theirs.
__attribute__((noinline, optimize("O0"))) void unoptimised_16(int depth) {
    int local[4];
    local[0] = depth;
    if (depth > 0)
        unoptimised_16(depth - 1);
    else
        g_short = unwind_16(0xf0);
    (void)local;
}

BOOST_AUTO_TEST_CASE(frames_that_read_rbp_through_the_memo) {
    Short s[3];
    for (int i = 0; i < 3; ++i) {
        asm volatile("" : "+r"(i));
        unoptimised_16(3);
        s[i] = g_short;
        BOOST_TEST(s[i].fast == s[i].general);
    }
    BOOST_TEST(s[1].fast == s[0].fast);
    BOOST_TEST(s[2].tag == 0xf0u);  // the memo's
}

// A saved rbp word a later rule reads is compared on replay: with that word
// alone changed (the caller's rbp saved in an unoptimised frame, whose
// caller's CFA rule takes it), the memo's entry is not replayed.
struct Rbp_round {
    uint64_t hits_before, hits_after;
};
Rbp_round g_rbp_round;
__attribute__((noinline)) void capture_for_rbp() {
    uintptr_t out[16];
    uint64_t tag;
    g_rbp_round.hits_before = g_memo.hits;
    fast_unwind::capture(out, 16, 0, 0, &g_memo, &tag);
    g_rbp_round.hits_after = g_memo.hits;
    asm volatile("" ::: "memory");
}
__attribute__((noinline, optimize("O0"))) void unoptimised_rbp(int depth, int change) {
    int local[4];
    local[0] = depth;
    if (depth > 0) {
        unoptimised_rbp(depth - 1, change);
    } else {
        // This frame's first word: its caller's rbp, restored (by `leave`)
        // only when this function returns.
        auto* saved = static_cast<uintptr_t*>(__builtin_frame_address(0));
        const uintptr_t word = *saved;
        if (change) *saved = word + 16;
        capture_for_rbp();
        *saved = word;
    }
    (void)local;
}

BOOST_AUTO_TEST_CASE(a_changed_saved_rbp_is_not_replayed) {
    Rbp_round r[3];
    const int change[3] = {0, 0, 1};
    for (int i = 0; i < 3; ++i) {
        asm volatile("" : "+r"(i));
        unoptimised_rbp(2, change[i]);
        r[i] = g_rbp_round;
    }
    BOOST_TEST(r[1].hits_after == r[1].hits_before + 1);  // the same stack: replayed
    BOOST_TEST(r[2].hits_after == r[2].hits_before);      // one saved rbp word changed: not
}

// replay_tag, as a traced allocation uses it: from an entry's frame, the
// tag capture would give, or 0 where capture must run.
enum Replay_step { k_capture_and_tag, k_replay, k_replay_skipping_pc, k_replay_max_8, k_replay_pc_changed };
struct Replay_round {
    uint64_t tag;
    uint64_t hits_before, hits_after;
};
Replay_round g_replay;
__attribute__((noinline)) void replay_from(uintptr_t start, Replay_step step) {
    Replay_round& r = g_replay;
    r.hits_before = g_memo.hits;
    const uintptr_t pc = *reinterpret_cast<const uintptr_t*>(start + 8);  // the entry's return address
    switch (step) {
        case k_capture_and_tag: {
            uintptr_t out[16];
            BOOST_TEST(fast_unwind::capture(out, 16, 0, 0, &g_memo, &r.tag, start) > 0);
            if (r.tag == 0) fast_unwind::remember(g_memo, 0x99);
            break;
        }
        case k_replay:
            r.tag = fast_unwind::replay_tag(g_memo, 16, 0, 0, start);
            break;
        case k_replay_skipping_pc:
            r.tag = fast_unwind::replay_tag(g_memo, 16, pc, pc + 1, start);
            break;
        case k_replay_max_8:
            r.tag = fast_unwind::replay_tag(g_memo, 8, 0, 0, start);
            break;
        case k_replay_pc_changed: {
            // The stack as another return address there would have it.
            uintptr_t& word = *reinterpret_cast<uintptr_t*>(start + 8);
            word = pc + 1;
            r.tag = fast_unwind::replay_tag(g_memo, 16, 0, 0, start);
            word = pc;
            break;
        }
    }
    r.hits_after = g_memo.hits;
    asm volatile("" ::: "memory");
}
__attribute__((noinline)) void replay_entry(Replay_step step) {  // an allocator's entry
    replay_from(reinterpret_cast<uintptr_t>(__builtin_frame_address(0)), step);
    asm volatile("" ::: "memory");
}

BOOST_AUTO_TEST_CASE(a_tagged_stack_replays_from_an_entry_s_frame) {
    const Replay_step steps[] = {k_capture_and_tag,   k_replay, k_replay_skipping_pc, k_replay_max_8,
                                 k_replay_pc_changed, k_replay};
    Replay_round r[6];
    for (int i = 0; i < 6; ++i) {  // one call site: the same stack each time
        asm volatile("" : "+r"(i));
        replay_entry(steps[i]);
        r[i] = g_replay;
    }
    BOOST_TEST(r[0].tag == 0u);  // unwound, then tagged
    BOOST_TEST(r[1].tag == 0x99u);
    BOOST_TEST(r[1].hits_after == r[1].hits_before + 1);
    BOOST_TEST(r[2].tag == 0u);  // the entry's caller is in the skipped range: capture's to skip
    BOOST_TEST(r[3].tag == 0u);  // another max: another unwinding
    BOOST_TEST(r[4].tag == 0u);  // the first frame's pc is another: not the entry's
    for (int i = 2; i < 5; ++i) BOOST_TEST(r[i].hits_after == r[i].hits_before);
    BOOST_TEST(r[5].tag == 0x99u);  // (the stack as it was: still the memo's)
    BOOST_TEST(fast_unwind::replay_tag(g_memo, 16, 0, 0, 8) == 0u);  // a start below this frame
}

// More frames than the memo keeps: unwound every time, never tagged.
BOOST_AUTO_TEST_CASE(long_backtraces_pass_the_memo_by) {
    for (int i = 0; i < 2; ++i) {
        asm volatile("" : "+r"(i));
        uintptr_t out[fast_unwind::k_memo_frames + 1];
        uint64_t tag = 1;
        BOOST_TEST(fast_unwind::capture(out, fast_unwind::k_memo_frames + 1, 0, 0, &g_memo, &tag) > 0);
        BOOST_TEST(tag == 0u);
        fast_unwind::remember(g_memo, 7);  // (nothing to tag)
    }
}

BOOST_AUTO_TEST_SUITE_END()
