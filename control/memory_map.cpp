#include "memory_map.hpp"

#include <cerrno>
#include <cstring>
#include <link.h>
#include <sys/ioctl.h>

#include "loader_guard.hpp"
#include "object_headers.hpp"
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
    r = Range{lo, hi, inode == 0, scannable, perms[0] == 'r', perms[1] == 'w'};
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

// The kernel's PROCMAP_QUERY (linux/fs.h of 6.11; Debian 12's headers are
// older). Version 1 of the structure: `size` says which.
struct Procmap_query {
    uint64_t size;
    uint64_t query_flags;
    uint64_t query_addr;
    uint64_t vma_start, vma_end;
    uint64_t vma_flags;
    uint64_t vma_page_size;
    uint64_t vma_offset;
    uint64_t inode;
    uint32_t dev_major, dev_minor;
    uint32_t vma_name_size, build_id_size;
    uint64_t vma_name_addr, build_id_addr;
};
constexpr unsigned long k_procmap_query = _IOWR('f', 17, Procmap_query);
constexpr uint64_t k_vma_readable = 0x01, k_vma_writable = 0x02, k_vma_shared = 0x08;
constexpr uint64_t k_covering_or_next = 0x10;

// The first mapping ending above `address` that has every flag of `want`
// (none: ENOENT; an old kernel: ENOTTY or EINVAL).
bool query(int fd, uintptr_t address, uint64_t want, Procmap_query& q) {
    q = Procmap_query{};
    q.size = sizeof q;
    q.query_flags = k_covering_or_next | want;
    q.query_addr = address;
    return ioctl(fd, k_procmap_query, &q) == 0;
}

Range range_of(const Procmap_query& q) {
    bool readable = q.vma_flags & k_vma_readable, writable = q.vma_flags & k_vma_writable;
    bool anonymous = q.inode == 0;
    // A device is a file: the scan reads files only where they are a
    // module's data, so "not a device" needs no name here.
    return Range{q.vma_start, q.vma_end, anonymous, readable && writable && !(q.vma_flags & k_vma_shared), readable,
                 writable};
}

}  // namespace

Query query_writable(int fd, Ranges& out) {
    out.writable_only = true;
    Procmap_query q;
    for (uintptr_t a = 0;; a = q.vma_end) {
        if (!query(fd, a, k_vma_writable, q)) {
            if (errno == ENOENT) return Query::done;  // no mapping after a
            if (errno != ENOTTY && errno != EINVAL && errno != ENOSYS && errno != EPERM && errno != EACCES)
                return Query::failed;
            out.count = 0;
            out.writable_only = false;
            return Query::unsupported;
        }
        if (q.vma_end <= a || !out.push(range_of(q))) return Query::failed;
    }
}

bool guarded_below(int fd, const Ranges& maps, const Range& r) {
    if (!maps.writable_only) {
        size_t i = static_cast<size_t>(&r - maps.items);
        return i > 0 && maps.items[i - 1].hi == r.lo && !maps.items[i - 1].readable;
    }
    Procmap_query q;
    return r.lo > 0 && query(fd, r.lo - 1, 0, q) && q.vma_end == r.lo && q.vma_start < r.lo &&
           !(q.vma_flags & k_vma_readable);
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
        (is_own ? m->own : m->writable).push(Range{lo, hi, false, true, true, true});
    }
    return 0;
}

}  // namespace

bool collect_modules(Modules& out, const void* own) {
    Module_query q{&out, reinterpret_cast<uintptr_t>(own)};
    loader::Use use;  // the loader's lock: not across a fork
    if (!loader::may_be_locked()) {
        dl_iterate_phdr(collect_module, &q);
        return true;
    }
    // The loader's lists of objects, one a namespace, read without its lock
    // (this child has no other thread to change them), each object's
    // headers by object_headers, carefully: a parent's thread inside dlclose
    // at the fork leaves an object listed whose mapping is gone (glibc
    // unmaps, then unlists), and its addresses may hold anything since. An
    // object _dl_find_object does not know, or whose headers are gone or do
    // not name its dynamic section, was being loaded (its constructors have
    // not run: nothing of the program's is in its data) or unloaded. One
    // whose headers are there but unusual leaves the scan without its data:
    // false.
    for (const auto* ns = reinterpret_cast<const r_debug_extended*>(&_r_debug); ns;
         ns = ns->base.r_version >= 2 ? ns->r_next : nullptr)
        for (const link_map* l = ns->base.r_map; l; l = l->l_next) {
            if (!l->l_ld) continue;  // (a dynamic section is what finds it)
            object_headers::Object o;
            const object_headers::Found found =
                object_headers::find(reinterpret_cast<uintptr_t>(l->l_ld), o, /*careful=*/true);
            if (found == object_headers::Found::unusual) return false;
            if (found == object_headers::Found::none || o.map != l) continue;
            bool names_its_dynamic = false;
            for (int i = 0; i < o.phnum; ++i)
                if (o.phdr[i].p_type == PT_DYNAMIC && o.bias + o.phdr[i].p_vaddr == reinterpret_cast<uintptr_t>(l->l_ld))
                    names_its_dynamic = true;
            if (!names_its_dynamic) continue;
            dl_phdr_info info{};
            info.dlpi_addr = o.bias;
            info.dlpi_name = o.name;
            info.dlpi_phdr = o.phdr;
            info.dlpi_phnum = static_cast<ElfW(Half)>(o.phnum);
            collect_module(&info, sizeof info, &q);
        }
    return true;
}

}  // namespace zmm::memory_map
