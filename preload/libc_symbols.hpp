// glibc's own allocator functions and dlopen, found without dlsym.
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
};

// Resolved on first use; a missing function is nullptr.
const Functions& functions();

// The default-version definition of `name` in libc.so.6, or nullptr.
void* symbol(const char* name);

}  // namespace zmm::libc
