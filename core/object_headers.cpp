#include "object_headers.hpp"

#include <cstring>
#include <dlfcn.h>
#include <sys/mman.h>

namespace zmm::object_headers {

Found find(uintptr_t address, Object& out) {
    dl_find_object found;
    if (_dl_find_object(reinterpret_cast<void*>(address), &found) != 0) return Found::none;
    const uintptr_t start = reinterpret_cast<uintptr_t>(found.dlfo_map_start);
    const uintptr_t end = reinterpret_cast<uintptr_t>(found.dlfo_map_end);
    constexpr uintptr_t k_page = 4096;
    if (!found.dlfo_link_map || start % k_page || end <= start || end - start < k_page) return Found::unusual;
    // The mapping's first page is the first segment's, readable (the loader
    // reads the headers there itself), unless the object is being unloaded
    // (by a thread of the parent this child was forked from, say: its
    // objects are found on the loader's lists, not from a running pc).
    unsigned char resident;
    if (mincore(reinterpret_cast<void*>(start), k_page, &resident) != 0) return Found::none;
    const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(start);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_phentsize != sizeof(ElfW(Phdr)) || eh->e_phnum == 0 || eh->e_phnum == PN_XNUM ||
        eh->e_phoff % alignof(ElfW(Phdr)) || eh->e_phoff > k_page ||
        eh->e_phoff + size_t{eh->e_phnum} * sizeof(ElfW(Phdr)) > k_page)
        return Found::unusual;
    const auto* phdr = reinterpret_cast<const ElfW(Phdr)*>(start + eh->e_phoff);
    const uintptr_t bias = found.dlfo_link_map->l_addr;
    // The segment that maps the file's start must be the one at `start`.
    bool header_here = false;
    for (int i = 0; i < eh->e_phnum; ++i)
        if (phdr[i].p_type == PT_LOAD && phdr[i].p_offset == 0 && bias + (phdr[i].p_vaddr & ~(k_page - 1)) == start)
            header_here = true;
    if (!header_here) return Found::unusual;
    out.phdr = phdr;
    out.phnum = eh->e_phnum;
    out.bias = bias;
    out.name = found.dlfo_link_map->l_name ? found.dlfo_link_map->l_name : "";
    out.eh_frame = reinterpret_cast<uintptr_t>(found.dlfo_eh_frame);
    out.map = found.dlfo_link_map;
    return Found::yes;
}

}  // namespace zmm::object_headers
