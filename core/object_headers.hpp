// A loaded object's program headers without the loader's lock:
// _dl_find_object (glibc 2.35) takes none, where dl_iterate_phdr takes the
// one a fork() can leave held in the child (loader::may_be_locked), and walks
// every object. The headers are read where the object's first segment maps
// the start of its file: the ELF header, then the program headers.
#pragma once

#include <cstdint>
#include <link.h>

namespace zmm::object_headers {

struct Object {
    const ElfW(Phdr)* phdr;
    int phnum;
    uintptr_t bias;        // the load address (dlpi_addr)
    const char* name;      // the loader's (l_name; "" for the program)
    uintptr_t eh_frame;    // PT_GNU_EH_FRAME's address, as the loader has it; 0: none
    const link_map* map;
};

enum class Found { yes, none, unusual };

// The object holding `address`. `none`: no object does; `unusual`: the
// headers are not where and as expected (dl_iterate_phdr knows them).
// `careful`: for an object that may have been unmapped since the loader
// listed it (a parent's thread was inside dlclose at the fork: glibc unmaps
// first, then unlists), whose addresses may hold anything since, even an
// inaccessible mapping. The header page is first copied with
// process_vm_readv (where reading is an error, not a fault); `none` if it
// cannot be read or holds no ELF header.
Found find(uintptr_t address, Object& out, bool careful = false);

}  // namespace zmm::object_headers
