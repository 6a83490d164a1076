// The stack depot: every distinct allocation backtrace once, under a small id
// (a block carries only the id, out of line). Frames keep the module they were
// in when the stack was first seen, so that a library dlclose'd before the
// report still names its module. Memory comes from the OS; nothing here calls
// the program's malloc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm::stack_depot {

inline constexpr unsigned k_max_frames = 64;

struct Module {
    uintptr_t base;  // load bias (dlpi_addr)
    uintptr_t lo, hi;  // its mapped segments
    char path[256];
};

struct Frame {
    uintptr_t pc;
    uint32_t module;  // index into modules(), or k_no_module
};
inline constexpr uint32_t k_no_module = ~0u;

// The id of this stack (innermost frame first), storing it if new; 0 for an
// empty stack or when the OS refuses memory.
uint32_t put(const uintptr_t* pcs, unsigned n);

// The frames of a stored stack; returns their number.
unsigned get(uint32_t id, Frame* out, unsigned max);

const Module* module(uint32_t index);

// The loader unloaded objects (backtrace::check_unloads): the modules are
// looked up again, and a stack through an unloaded object's addresses is
// stored anew (they may be other code now); the stacks stored before keep
// the modules they named.
void forget_modules();

// fork(): the depot's lock, taken before, released (parent) or reset (child).
void before_fork();
void after_fork_parent();
void after_fork_child();
// Is pc in the dynamic loader (ld.so: its allocations are its own), as far
// as the depot has seen the modules? No lock: for the allocation path,
// right after put().
bool is_loader_pc(uintptr_t pc);

// Distinct stacks stored (for statistics and tests).
size_t count();

}  // namespace zmm::stack_depot
