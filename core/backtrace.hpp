// Backtrace capture from the unwind tables (Debian's binaries have no frame
// pointers): fast_unwind's cached per-address rules, and libunwind for any
// stack those do not cover (or all, with prepare(false)).
//
// libunwind is loaded privately (dlopen RTLD_LOCAL) the first time it is
// needed, outside the allocator: its libunwind.so.8 also defines
// _Unwind_RaiseException and backtrace(), which must not take the place of
// libgcc_s's and glibc's in the program. Capture itself allocates nothing
// (libunwind's caches come from mmap); a malloc it might make is served by
// the thread's own heap (the caller guards re-entry).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fast_unwind.hpp"

namespace zmm::backtrace {

// Loads libunwind and warms up its global state (not unw_backtrace's
// per-thread trace cache: backtrace.cpp). Call outside the allocator (it
// may allocate).
// false if libunwind is not available: captures then return 0 frames.
// `fast` false: every capture through libunwind (ZMM_FAST_UNWIND=0). In a
// child whose loader may be locked (loader::may_be_locked), never libunwind
// (it calls dl_iterate_phdr), whatever `fast` says, nor its dlopen: the fast
// unwinder alone; a stack it does not cover has no frames.
bool prepare(bool fast = true);
bool prepared();

// Frames whose address is in [lo, hi) are the allocator's own and are not
// captured (the preload sets its text segment).
void set_own_range(uintptr_t lo, uintptr_t hi);

// Up to `max` return addresses of the calling thread, innermost first,
// without the allocator's own frames. 0 if not prepared. With `memo` (the
// thread's), `*tag` is the tag fast_unwind::remember gave these frames when
// the same stack was last captured, 0 if none; with a tag, `out` is not
// written (the tag stands for the frames). `start_frame`: as
// fast_unwind::capture's (the allocator's entry: its frames below are its own).
unsigned capture(uintptr_t* out, unsigned max, fast_unwind::Memo* memo = nullptr, uint64_t* tag = nullptr,
                 uintptr_t start_frame = 0);

// capture's tag, when `memo` (the thread's) has one for the stack above
// `start_frame` (fast_unwind::replay_tag): the common case of a traced
// allocation, without capture's set-up. 0: call capture.
uint64_t memo_tag(fast_unwind::Memo* memo, unsigned max, uintptr_t start_frame);

// After the loader may have loaded or unloaded objects (the preload calls
// it around dlclose, and before dlopen for glibc's own unloads): when it
// unloaded any since the last call, what the unwinders and the depot know
// of addresses is forgotten (fast_unwind's rules and memos, the depot's
// modules; unw_backtrace's cache cannot be flushed: a stack it unwinds
// through an unloaded object's addresses is unwound again with unw_step,
// uncached), since code loaded later at those addresses is other code.
// Call outside the allocator.
void check_unloads();

// The text (executable) segment of the object containing `address`.
bool text_range_of(const void* address, uintptr_t* lo, uintptr_t* hi);

}  // namespace zmm::backtrace
