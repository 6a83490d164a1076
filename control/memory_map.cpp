#include "memory_map.hpp"

#include <cerrno>
#include <link.h>
#include <unistd.h>

#include "loader_guard.hpp"
#include "size_class.hpp"

namespace zmm::memory_map {
namespace {

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

}  // namespace

// Each line of /proc/self/maps: "lo-hi perms offset dev inode path".
bool read_maps(int fd, Ranges& out) {
    char buf[8192];
    uintptr_t lo = 0, hi = 0, inode = 0;
    char perms[4] = {};
    unsigned field = 0, pos = 0;  // field: 0 lo, 1 hi, 2 perms, 3 offset, 4 dev, 5 inode, 6 path
    bool device = false, ok = true;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) {
            char c = buf[i];
            if (c == '\n') {
                bool scannable = perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p' && !device;
                if (field >= 5 && !out.push(Range{lo, hi, inode == 0, scannable, perms[0] == 'r'})) ok = false;
                lo = hi = inode = 0;
                field = pos = 0;
                device = false;
                continue;
            }
            if (field == 0) {
                if (c == '-')
                    field = 1;
                else if (int d = hex_digit(c); d >= 0)
                    lo = lo << 4 | static_cast<uintptr_t>(d);
            } else if (field == 1) {
                if (c == ' ')
                    field = 2, pos = 0;
                else if (int d = hex_digit(c); d >= 0)
                    hi = hi << 4 | static_cast<uintptr_t>(d);
            } else if (field <= 4) {
                if (c == ' ')
                    ++field, pos = 0;
                else if (field == 2 && pos < 4)
                    perms[pos++] = c;
            } else if (field == 5) {
                if (c == ' ')
                    field = 6, pos = 0;
                else if (c >= '0' && c <= '9')
                    inode = inode * 10 + static_cast<uintptr_t>(c - '0');
            } else {
                // The path: "/dev/..." is a device; reading it may act on it.
                if (c == ' ' && pos == 0) continue;
                static const char dev[] = "/dev/";
                if (pos < 5 && c != dev[pos]) pos = 100;
                else if (pos < 5 && ++pos == 5) device = true;
            }
        }
    }
    return ok && out.count > 0;
}

namespace {

struct Module_query {
    Modules* out;
    uintptr_t own;
};

int collect_module(dl_phdr_info* info, size_t, void* data) {
    auto* q = static_cast<Module_query*>(data);
    Modules* m = q->out;
    uintptr_t own = q->own;
    bool is_own = false;
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && own >= lo && own < lo + ph.p_memsz) is_own = true;
    }
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_W)) continue;
        uintptr_t lo = (info->dlpi_addr + ph.p_vaddr) & ~(k_page_size - 1);
        uintptr_t hi = (info->dlpi_addr + ph.p_vaddr + ph.p_memsz + k_page_size - 1) & ~(k_page_size - 1);
        (is_own ? m->own : m->writable).push(Range{lo, hi, false, true, true});
    }
    return 0;
}

}  // namespace

void collect_modules(Modules& out, const void* own) {
    Module_query q{&out, reinterpret_cast<uintptr_t>(own)};
    loader::Use use;  // the loader's lock: not across a fork
    dl_iterate_phdr(collect_module, &q);
}

}  // namespace zmm::memory_map
