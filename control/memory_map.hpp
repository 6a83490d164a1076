// The process's address space, as the leak scan needs it: its mappings
// (/proc/self/maps) and the writable segments of its loaded modules, as
// sorted ranges in memory from the OS. Nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mapped_array.hpp"

namespace zmm::memory_map {

struct Range {
    uintptr_t lo, hi;
    bool anonymous;  // a mapping without a file ([heap], [stack], mmap'd memory)
    bool scannable;  // readable, writable, private, not a device
    bool readable;
    bool writable;
};

// Owns its memory (not a plain value, unlike Mapped_array).
struct Ranges : Mapped_array<Range, 512> {
    // Every mapping (read_maps), or only the writable ones (query_writable):
    // then the neighbours of a range are not in the list.
    bool writable_only = false;
    Ranges() = default;
    Ranges(const Ranges&) = delete;
    Ranges& operator=(const Ranges&) = delete;
    // Sorted by start, overlapping ranges merged (a stack mapping and an
    // internal mapping inside it, say): disjoint, so that first_after holds.
    void sort_and_merge() {
        for (size_t i = 1; i < count; ++i)  // insertion sort: short, nearly sorted lists
            for (size_t j = i; j > 0 && items[j - 1].lo > items[j].lo; --j) {
                Range t = items[j];
                items[j] = items[j - 1];
                items[j - 1] = t;
            }
        size_t m = 0;
        for (size_t i = 0; i < count; ++i) {
            if (m && items[i].lo <= items[m - 1].hi) {
                if (items[i].hi > items[m - 1].hi) items[m - 1].hi = items[i].hi;
            } else {
                items[m++] = items[i];
            }
        }
        count = m;
    }
    // The range containing a (ranges sorted, disjoint), or nullptr.
    const Range* containing(uintptr_t a) const {
        size_t i = first_after(a);
        return i < count && items[i].lo <= a ? &items[i] : nullptr;
    }
    // The index of the first range ending after a.
    size_t first_after(uintptr_t a) const {
        size_t lo = 0, hi = count;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (items[mid].hi <= a)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }
    ~Ranges() { release(); }
};

// Every mapping of the process, in address order, read from `fd` (an open
// /proc/self/maps: the caller opens it while a descriptor is sure to be
// free). false if nothing could be read or a range could not be stored.
bool read_maps(int fd, Ranges& out);

// Every writable mapping, in address order, asked of the kernel one at a
// time (PROCMAP_QUERY, an ioctl on `fd`, an open /proc/self/maps; Linux
// 6.11): what the leak scan reads, without the text of every mapping. On a
// process of 40 mappings, 12 of them writable, 10-15 µs where reading the
// file takes 40-60 (the kernel formats each line and its path).
enum class Query {
    done,
    unsupported,  // a kernel without it, or a descriptor it refuses (nothing added): read the file
    failed,       // a range could not be stored, or the kernel failed otherwise
};
Query query_writable(int fd, Ranges& out);

// Is the mapping right below `r` (one of `maps`) there and inaccessible: the
// guard page glibc puts under a thread's stack? From the list when it has
// every mapping, else asked of the kernel through `fd`.
bool guarded_below(int fd, const Ranges& maps, const Range& r);

// The writable segments of every loaded module (dl_iterate_phdr: takes the
// loader's lock; in a child whose loader may be locked, the loader's lists
// read without it), page-rounded; the module holding `own` (zmm's) apart.
// false: a module's could not be read.
struct Modules {
    Ranges writable;  // every other module's
    Ranges own;       // zmm's: never read (the registry alone is 64 MiB)
};
bool collect_modules(Modules& out, const void* own);

}  // namespace zmm::memory_map
