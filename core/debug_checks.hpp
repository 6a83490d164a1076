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
// Before a free of p (any zmm block): checks the canary, poisons the block.
void on_free(void* p);
// The size asked for, for realloc's copy (usable size if unknown).
size_t requested_size(void* p);

}  // namespace zmm::debug_checks
