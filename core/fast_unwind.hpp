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
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm::fast_unwind {

// Return addresses, innermost first, starting with the caller's own; at
// most `max`. -1: this stack needs the general unwinder. Never faults: it
// reads only the calling thread's stack (its mapping, found once per
// thread) and mapped unwind tables.
int capture(uintptr_t* out, unsigned max);

// Forgets every cached rule (a library was closed: another may take its
// addresses).
void forget_rules();

// The rule cache's counters (tests): rules computed, and those unsupported.
struct Stats {
    uint64_t computed, unsupported;
};
Stats stats();

}  // namespace zmm::fast_unwind
