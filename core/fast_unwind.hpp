// A fast unwinder for traced allocations: the return addresses of the
// caller's stack, from each return address's call-frame rule (where the
// frame's CFA is, from the stack pointer or the frame pointer, and where the
// caller's frame pointer was saved), read once from the module's .eh_frame
// and cached. About 20 instructions a frame where libunwind's cached trace
// takes over 100.
//
// It covers the frames ordinary compiled code has; anything else (a signal
// frame, a rule given by a DWARF expression, a frame pointer kept in another
// register, a stack it cannot bound, a read that would leave the thread's
// stack) makes it give up, and the caller unwinds with libunwind instead.
// It makes no system call on a rule it has (a new return address takes
// dl_iterate_phdr).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm::fast_unwind {

struct Memo;

// Return addresses, innermost first, starting with the caller's own; at
// most `max`. -1: this stack needs the general unwinder. Never faults: it
// reads only the calling thread's stack, when the stack pointer is inside
// it (see note_thread_stack), and the loaded segment of each module's
// unwind tables. The innermost return addresses inside [skip_lo, skip_hi)
// (the allocator's own frames) are unwound, not kept; at most k_max_skipped.
// With `memo` (the calling thread's, below), `*tag` is the tag given to
// these frames when they were last unwound from here, 0 if none (remember
// gives one); with a tag, `out` is left as it was (the count is returned:
// the tag stands for the frames). `start_frame`, if not 0: the frame address
// (__builtin_frame_address(0)) of a function with a frame pointer that is
// still running below the caller, where the unwinding starts (at its
// return address), the frames between not unwound (ignored if it is not
// above this call's frame in the same stack).
int capture(uintptr_t* out, unsigned max, uintptr_t skip_lo = 0, uintptr_t skip_hi = 0, Memo* memo = nullptr,
            uint64_t* tag = nullptr, uintptr_t start_frame = 0);
inline constexpr unsigned k_max_skipped = 16;

// A thread's memo of the stacks it unwound. A program allocates from the
// same call chains over and over (a loop, a constructor called for every
// element): the same frames at the same stack addresses. An unwinding is a
// function of its first frame's state (pc, sp, and fp when a rule reads it
// before a frame restores it) and of the stack words it reads (each
// frame's return address, and its saved rbp), at addresses that follow
// from that state. An entry keeps a finished unwinding's start, the words
// it read, its frames, and a tag its caller gave them (remember: the
// depot's id, say). A capture that starts from the same state and finds
// the same words is the entry's: a load and a compare a frame, independent
// of each other, where unwinding looks each return address's rule up (a
// cache miss) before it can read the next. Entries die with their
// generation of rules (forget_rules). Backtraces of up to k_memo_frames.
inline constexpr unsigned k_memo_frames = 16;
inline constexpr uint32_t k_slot_mask = 7;
struct Memo_entry {
    uint64_t generation;  // of the rules it was unwound with; 0: empty
    uintptr_t pc, sp, fp;
    bool fp_read;         // a rule read the first frame's fp
    uint8_t max, n, steps, fp_reads;  // (each at most k_memo_frames)
    uintptr_t lowest_read, highest_cfa;  // every word read is in [lowest_read, highest_cfa)
    uint64_t tag;                        // the caller's (remember); 0: none yet
    uintptr_t pcs[k_memo_frames + 1];    // the frames, then what the last step read (0, or beyond max)
    // What a replay reads, at these offsets from the first frame's sp:
    // step k's return address (pcs[k + 1]), then the saved rbp words a later
    // rule used (fp_val).
    int32_t ra_off[k_memo_frames];
    int32_t fp_off[k_memo_frames];
    uintptr_t fp_val[k_memo_frames];
};
// The allocator's own frames, skipped before the program's: a few call
// chains (malloc's, operator new's, ...), each the same from every
// allocation site of the program, at any depth (their CFAs from the first
// frame's sp, which varies). Kept for chains whose rules all take the CFA
// from rsp.
struct Memo_skip {
    uint64_t generation;  // of the rules; 0: empty
    uintptr_t pc;         // the first frame's (= pcs[0])
    unsigned n;           // frames skipped
    uintptr_t pcs[k_max_skipped];
    uint32_t cfa_off[k_max_skipped];  // each frame's CFA, from the first frame's sp
    uint8_t slot[k_max_skipped];      // rbp reloaded from CFA - 8 * slot; 0: none
};

// 60 KiB, not zeroed by its constructor: it lives in memory that comes
// zeroed (a request record from os::map, static storage), where an entry
// never used costs no resident page (in a fresh mapping; a kept one is
// zeroed again). Only capture writes it, and a replay trusts what it wrote:
// the offsets of an entry's reads, whose addresses step() bounds-checked
// when it recorded them (memory of zmm's own, which the program does not
// reach but by a wild write).
struct Memo {
    Memo() {}
    static constexpr unsigned k_sets = 64;             // by the first frame's pc and sp
    static constexpr unsigned k_entries = 2 * k_sets;  // two ways a set
    Memo_entry entries[k_entries];
    uint8_t recent[k_sets];                        // the way each set used last
    Memo_entry scratch;                            // a capture that missed unwinds here (then into its way)
    static constexpr unsigned k_skip_entries = 4;  // each tried (replaced in turn)
    Memo_skip skips[k_skip_entries];
    unsigned skip_next;
    uintptr_t skip_lo, skip_hi;  // the skip range they are for
    Memo_entry* last;  // written by the last capture that missed
    uint64_t hits, skip_hits;
};
static_assert(sizeof(Memo) <= 60 * 1024, "a request record holds the memo: keep it within its pages");

// capture's answer when `memo` holds a tagged unwinding of this stack from
// `start_frame` (its frames above the allocator's own: the pc it returns to
// is outside [skip_lo, skip_hi)): the tag, read in a frame of this
// function's own size, without capture's set-up. 0: capture must run.
uint64_t replay_tag(Memo& memo, unsigned max, uintptr_t skip_lo, uintptr_t skip_hi, uintptr_t start_frame);

// Tags the frames the last capture through `memo` unwound (it returned a
// tag of 0), if it kept them.
void remember(Memo& memo, uint64_t tag);

// Forgets every cached rule (done when the loader's count of unloaded
// objects has changed at a rule's lookup: another library may have taken
// an unloaded one's addresses).
void forget_rules();

// A new thread, before its start routine: its stack is [lo, hi) (nothing
// else is mapped there). Without it, only the main thread's stack (from
// __libc_stack_end) is unwound here; other stacks are libunwind's.
void note_thread_stack(uintptr_t lo, uintptr_t hi);

// The rule cache's counters (tests): rules computed, and those unsupported.
struct Stats {
    uint64_t computed, unsupported;
};
Stats stats();

}  // namespace zmm::fast_unwind
