#include "memory_map.hpp"

#include <cstring>
#include <link.h>

#include "loader_guard.hpp"
#include "os.hpp"
#include "size_class.hpp"

namespace zmm::memory_map {
namespace {

// One line of /proc/self/maps, [p, end) without its newline:
// "lo-hi perms offset dev inode [path]". false if it has no inode field.
bool parse_line(const char* p, const char* end, Range& r) {
    uintptr_t lo, hi, inode = 0;
    p = os::parse_maps_range(p, end, &lo, &hi);
    if (!p || end - p < 6 || *p++ != ' ') return false;
    const char* perms = p;
    p += 4;
    for (int spaces = 0; p < end && spaces < 3; ++p) spaces += *p == ' ';  // past perms, offset and dev
    if (p == end || *p < '0' || *p > '9') return false;
    for (; p < end && *p >= '0' && *p <= '9'; ++p) inode = inode * 10 + static_cast<uintptr_t>(*p - '0');
    while (p < end && *p == ' ') ++p;
    // The path: "/dev/..." is a device; reading it may act on it.
    bool device = end - p >= 5 && memcmp(p, "/dev/", 5) == 0;
    bool scannable = perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p' && !device;
    r = Range{lo, hi, inode == 0, scannable, perms[0] == 'r'};
    return true;
}

}  // namespace

bool read_maps(int fd, Ranges& out) {
    struct Reading {
        Ranges* out;
        bool ok;
    } r{&out, true};
    bool whole = os::for_each_line(
        fd,
        [](const char* line, const char* end, void* ctx) {
            auto* r = static_cast<Reading*>(ctx);
            Range m;
            if (parse_line(line, end, m) && !r->out->push(m)) r->ok = false;
            return true;
        },
        &r);
    return whole && r.ok && out.count > 0;
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
