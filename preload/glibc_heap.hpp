// Pointers that belong to glibc's own heap: memory from before zmm took over,
// or from code bound to glibc's malloc directly. They are recognised by
// glibc's chunk layout (malloc/malloc.c: the size word before the block, its
// IS_MMAPPED and NON_MAIN_ARENA bits, heaps aligned to HEAP_MAX_SIZE, the
// main arena inside the program break), reading only memory that mincore says
// is mapped, and are handed back to glibc.
#pragma once

#include <cstddef>

namespace zmm::glibc_heap {

// Call once at start-up: the program break then is where glibc's main arena
// can begin.
void note_initial_break();

bool owns(const void* p);

// glibc's usable size of a block it owns (its malloc_usable_size).
size_t usable_size(const void* p);

}  // namespace zmm::glibc_heap
