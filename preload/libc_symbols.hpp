// glibc's own allocator functions, dlopen and dlclose, found without dlsym.
//
// libzmm.so defines malloc, __libc_malloc, dlopen...; calling those names
// from inside it would call zmm again. These are looked up in libc.so.6's
// dynamic symbol table (dl_iterate_phdr + the GNU hash table, default
// versions only), which allocates nothing and so is safe inside malloc.
#pragma once

#include <cstddef>

namespace zmm::libc {

struct Functions {
    void* (*malloc)(size_t);
    void (*free)(void*);
    void* (*calloc)(size_t, size_t);
    void* (*realloc)(void*, size_t);
    void* (*memalign)(size_t, size_t);
    void* (*dlopen)(const char*, int);
    int (*dlclose)(void*);
    // glibc's extensions, for the bypass (ZMM_ALLOC=0)
    int (*mallopt)(int, int);
    int (*malloc_trim)(size_t);
    void (*malloc_stats)();
    int (*malloc_info)(int, void*);
    void* mallinfo2;  // struct mallinfo2 (*)(): called through a typed pointer by the caller
};

// Resolved on first use; a missing function is nullptr.
const Functions& functions();

// The default-version definition of `name` in libc.so.6, or nullptr.
void* symbol(const char* name);

}  // namespace zmm::libc
