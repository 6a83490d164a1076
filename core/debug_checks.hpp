// ZMM_DEBUG=1: the checks too costly for the default. Every allocation takes
// the slow path; each block gets a canary after the size asked for (checked
// when it is freed: overflows), and a freed block is filled with a poison
// byte (checked when the block is handed out again: writes after free).
// Sizes come from the heap's block table (out of line, as for traced
// requests).
#pragma once

#include <cstddef>

#include "heap.hpp"

namespace zmm::debug_checks {

inline constexpr size_t k_canary_bytes = 16;
inline constexpr unsigned char k_canary = 0xcb;
inline constexpr unsigned char k_poison = 0xdf;

// After h allocated p for `size` bytes (with k_canary_bytes more): checks a
// reused block's poison, writes the canary, records the size. Diagnoses and
// aborts on a broken poison.
void on_alloc(Heap& h, void* p, size_t size);
// Before a free of p (any zmm block) by the thread whose token is
// `current_owner`: checks the canary, poisons the block, when its heap is
// that thread's. A block of another thread's heap is left to on_drained:
// the heap's table is its owner's alone (nullptr: every block is).
void on_free(void* p, const void* current_owner);
// A block h (the caller's heap) takes from its remote stack, freed by
// another thread: the canary's bytes past the stack's link (its first two
// words) are checked, the block past the link poisoned.
void on_drained(Heap& h, void* p);
// Is p a live block start: not a free slot, nor a large or huge block that
// holds a free slot's link (on its way back from another thread's free)?
bool is_live(void* p);
// The size asked for, for realloc's copy (usable size if unknown, or the
// block is another thread's).
size_t requested_size(void* p, const void* current_owner);

}  // namespace zmm::debug_checks
