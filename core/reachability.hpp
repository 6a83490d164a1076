// Which of a request's live blocks the program can still reach: a
// conservative mark, as LeakSanitizer and valgrind do it, with zmm's own
// metadata to resolve a word to the block it points into.
//
// The candidates are the ending request's live blocks. Every root range the
// caller gives (module data, thread stacks, TLS) and every live block of the
// heaps that is not a candidate is read word by word (8-byte aligned); a word
// that points anywhere inside a candidate (interior pointers count, as
// valgrind's "possibly lost" does) makes it reachable, and what it points to
// in turn. What no root reaches is lost: `indirect` when another lost block
// points to it, `definite` otherwise (a cycle of lost blocks is all indirect,
// as in both tools).
//
// No allocation: its tables come from the OS. Nothing here stops threads;
// the caller makes sure the memory it names stays mapped while it is read.
#pragma once

#include <cstddef>
#include <cstdint>

#include "leak_report.hpp"
#include "mapped_array.hpp"

namespace zmm {

class Heap;

class Reachability {
public:
    Reachability() = default;
    Reachability(const Reachability&) = delete;
    Reachability& operator=(const Reachability&) = delete;
    ~Reachability() { release(); }

    // The candidates (each `address` a block start, `size` the bytes to read
    // in it). Their kinds are set by classify(); one that is no longer a
    // live block is `gone` at once. false when the OS refuses memory for the
    // tables (the caller then keeps every block a leak). Call it once the
    // memory can no longer change (the other threads stopped).
    bool prepare(Leak* blocks, size_t count);
    void release();

    // A root range: [lo, hi), read by aligned words.
    void scan_root(const void* lo, const void* hi);
    // The same, reading only the pages the kernel says are resident (the
    // others were never written, when the system has no swap).
    void scan_root_resident(const void* lo, const void* hi);
    // Huge blocks of the heaps are read that way too (a sparse calloc'd
    // table of gigabytes is not faulted in).
    void set_resident_only(bool on) { resident_only_ = on; }
    bool resident_only() const { return resident_only_; }
    // Roots: every live block of `heap` that is not a candidate (small slots
    // that are not free, large runs, huge blocks). The heap's lists are
    // walked defensively: a chunk or huge block the registry does not vouch
    // for ends the walk of that list.
    void scan_heap(const Heap& heap);
    // Blocks of `heap` an earlier scan found lost (k_block_lost in its
    // table) are not roots, nor candidates (the caller leaves them out):
    // reading them would keep alive what the program dropped since. But a
    // pointer to one found again (the program held it where no scan reads:
    // in the kernel, a register, disguised) makes it reachable: its mark is
    // cleared (found_again() counts them) and what it points to is reached
    // in turn. Only a heap nobody changes during the scan (the calling
    // thread's). `covered`: every live block of it is a candidate or such a
    // block, and scan_heap skips it whole. After prepare().
    void leave_out_lost(const Heap* heap, bool covered);
    size_t found_again() const { return found_again_; }
    // After every root: sets each candidate's kind.
    void classify();

    // The candidate index of the block `v` points into, or -1.
    long resolve(uintptr_t v) const;
    // For tests: words read one at a time from the next prepare() on, even
    // where the CPU has AVX2 (scan_words_wide).
    static void set_narrow_only(bool on);
    // Does this scan read 8 words at a time (after prepare)? (tests)
    bool wide() const { return wide_; }
    uint64_t bytes_scanned() const { return scanned_; }

private:
    struct Slot {
        uintptr_t address;  // 0: empty
        uint32_t index;
    };
    long find(uintptr_t start) const;
    static size_t bytes_of(const Leak& b);
    void hit(uintptr_t v);
    void scan_words(const uintptr_t* w, const uintptr_t* end);
#if defined(__x86_64__)
    __attribute__((target("avx2"))) const uintptr_t* scan_words_wide(const uintptr_t* w,
                                                                     const uintptr_t* end);
#endif
    void flood();
    // Not a root: a candidate, or a block of lost_heap_ found lost.
    bool left_out(const Heap& heap, bool may_hold_candidates, uintptr_t block) const;
    // The start of the block of the heaps v points into (its usable size in
    // *usable), or 0.
    static uintptr_t block_start(uintptr_t v, size_t* usable);
    // The candidate v points into, `start` (of `usable` bytes) being the
    // block it points into; -1 if none.
    long candidate_at(uintptr_t v, uintptr_t start, size_t usable) const;
    // v points into no candidate but into the block at `start`: a lost
    // block of lost_heap_?
    void hit_lost(uintptr_t v, uintptr_t start, size_t usable);
    // [lo, hi) may hold blocks to resolve: in the range, its granules in the filter.
    void extend_range(uintptr_t lo, uintptr_t hi);
    void filter_granules(uintptr_t lo, uintptr_t hi);
    bool filtered(uintptr_t v) const {
        uint64_t g = (v >> 21) * 0x9E3779B97F4A7C15ull >> 52;  // 4096 filter bits
        return (filter_[g >> 6] >> (g & 63)) & 1;
    }

    Leak* blocks_ = nullptr;
    size_t count_ = 0;
    Slot* slots_ = nullptr;
    size_t capacity_ = 0;  // power of two
    uint32_t* work_ = nullptr;
    size_t work_count_ = 0;
    uintptr_t lo_ = 0, span_ = 0;  // candidates lie in [lo_, lo_ + span_)
    uint64_t filter_[64] = {};     // granules (2 MiB) holding candidates
    uint64_t scanned_ = 0;
    bool indirect_pass_ = false;
    bool resident_only_ = false;
    bool wide_ = false;  // the CPU has AVX2 (scan_words_wide)
    const Heap* lost_heap_ = nullptr;
    bool lost_heap_covered_ = false;
    size_t found_again_ = 0;
    struct Found_again {
        uintptr_t address;
        size_t bytes;
    };
    Mapped_array<Found_again, 256> found_work_;  // found again, not read yet
    long current_ = -1;  // the lost block being read (indirect pass)
};

}  // namespace zmm
