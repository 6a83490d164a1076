// Names from a module's ELF and DWARF (elfutils' libdw, loaded on first use
// with dlopen): the function around an address, demangled, and its file and
// line. Shared by the in-process symbolizer (symbolize.cpp, a fallback) and
// the zmm-symbolizer helper process (symbolizer_main.cpp), which takes the
// work and the memory out of the program.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm::dwarf_names {

// Loads libdw; false if it is missing (names then come from dladdr, in the
// process only).
bool load();

// A module's names: `path` is its file (the main executable's too), `base`
// the address it was loaded at. Null if libdw cannot read it.
struct Module;
Module* open_module(const char* path, uintptr_t base);

// What is known at `at` (an address inside a call instruction: a return
// address less one) of module `m`: the function, demangled ("" if none),
// the file and line ("" and 0 if none). Outputs are NUL-terminated, cut to
// their sizes.
void lookup(Module* m, uintptr_t at, char* function, size_t function_size, char* file, size_t file_size,
            unsigned* line);

// Demangles `name` (a C++ symbol, else copied) into out.
void set_function(char* out, size_t n, const char* name);

// Copies s into out (n bytes), cut and NUL-terminated.
void copy(char* out, size_t n, const char* s);

}  // namespace zmm::dwarf_names
