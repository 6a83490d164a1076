// Names for the frames of a report: function (demangled), file:line where
// debug information exists, module+offset always.
//
// Only when reporting, never inside the allocator: it may allocate (through
// the program's malloc, i.e. zmm's own heap) and opens files. Uses elfutils'
// libdw, loaded on first use (dlopen), which reads .symtab (static functions
// of an executable linked without -rdynamic included), .gnu_debugdata and
// separate debug files; without libdw, names come from dladdr.
#pragma once

#include <cstdint>

#include "stack_depot.hpp"

namespace zmm::symbolize {

struct Location {
    char function[512];  // "" when unknown
    char file[256];      // "" when unknown
    unsigned line;
    const char* module_name;  // basename of the module's path
    uintptr_t offset;         // pc - module base
};

void locate(const stack_depot::Frame& frame, Location& out);

// fork(): the symbolizer's lock is taken before and released (parent) or
// reset (child) after, so that no child inherits it held.
void before_fork();
void after_fork_parent();
void after_fork_child();

// Loads libdw now (locate() would on first use): outside the tool heap, so
// that the loader's records of libdw stay with the program's.
void prepare();

// The path of the main executable ("" for dl_iterate_phdr's first object).
const char* executable_path();

}  // namespace zmm::symbolize
