// Names for the frames of a report: function (demangled), file:line where
// debug information exists, module+offset always.
//
// Only when reporting, never inside the allocator: it opens files and may
// allocate (zmm's own heap). The names come from a helper process,
// zmm-symbolizer (beside libzmm.so; ZMM_SYMBOLIZER names another), which
// reads .symtab (static functions of an executable linked without -rdynamic
// included), .gnu_debugdata and separate debug files with elfutils' libdw:
// its tables stay out of the program's memory (LeakSanitizer's
// llvm-symbolizer model). Without the helper (ZMM_SYMBOLIZER=0, or it
// cannot be started or stops answering) libdw is loaded into the process
// (dlopen); without libdw, names come from dladdr.
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

// Before a report: `helper` is ZMM_SYMBOLIZER ("" for zmm-symbolizer
// beside libzmm.so, "0" for none). Without a helper, loads libdw now
// (locate() would on first use): outside the tool heap, so that the
// loader's records of libdw stay with the program's. The helper itself
// starts at the first locate().
void prepare(const char* helper);

// The path of the main executable ("" for dl_iterate_phdr's first object).
const char* executable_path();

}  // namespace zmm::symbolize
