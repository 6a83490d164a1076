#include "object_headers.hpp"

#include <cerrno>
#include <cstring>
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

namespace zmm::object_headers {

namespace {

// Can the page at `start` be read? (A copy: no fault when it cannot.)
// Where the kernel refuses the call itself, only mincore's answer.
bool readable_page(uintptr_t start, uintptr_t page_size) {
    static char copy[4096];  // (static: the careful callers are single-threaded, a forked child's scan)
    if (page_size > sizeof copy) return false;
    const int saved = errno;
    iovec local{copy, page_size};
    iovec remote{reinterpret_cast<void*>(start), page_size};
    const ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    const bool refused = got < 0 && (errno == ENOSYS || errno == EPERM);
    errno = saved;
    return got == static_cast<ssize_t>(page_size) || refused;
}

}  // namespace

Found find(uintptr_t address, Object& out, bool careful) {
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
    if (careful && !readable_page(start, k_page)) return Found::none;
    const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(start);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0) return careful ? Found::none : Found::unusual;
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 ||
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
