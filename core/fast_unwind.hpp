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

// Return addresses, innermost first, starting with the caller's own; at
// most `max`. -1: this stack needs the general unwinder. Never faults: it
// reads only the calling thread's stack, when the stack pointer is inside
// it (see note_thread_stack), and the loaded segment of each module's
// unwind tables. The innermost return addresses inside [skip_lo, skip_hi)
// (the allocator's own frames) are unwound, not kept; at most k_max_skipped.
int capture(uintptr_t* out, unsigned max, uintptr_t skip_lo = 0, uintptr_t skip_hi = 0);
inline constexpr unsigned k_max_skipped = 16;

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
