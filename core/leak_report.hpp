// The report at the end of a request: its leaks grouped by allocation
// backtrace, largest group first, in ZendMM's words, or as one JSON object
// (ZMM_LOG_FORMAT=json). Written with write(2) through an allocation-free
// buffer; symbolization may use the program's malloc (the report runs outside
// the allocator, on the thread's persistent heap).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm {

class Text;

struct Leak {
    uintptr_t address;
    uint64_t size;   // requested (rounded when not traced)
    uint32_t stack;  // stack depot id, 0 if none
};

struct Request_summary {
    uint64_t id;
    const char* name;
    int pid, tid;
    size_t usage, peak;            // bytes in blocks, ZendMM's size/peak
    size_t real_usage, real_peak;  // bytes mapped
    size_t limit;                  // SIZE_MAX: none
    uint64_t duration_ns;
    bool json;
};

// Groups `leaks` (reordering the array) and writes the report to fd. Nothing
// for a request without leaks unless `always`.
void write_leak_report(int fd, const Request_summary& r, Leak* leaks, size_t count, bool always);

// The frames of a stored stack, one line each ("#k 0xPC in function
// file:line (module+0xOFFSET)"), as the leak report writes them.
void write_frames(Text& t, uint32_t stack);

// Leaked blocks and bytes after grouping (for the caller's totals).
struct Leak_totals {
    size_t blocks, bytes, groups;
};
Leak_totals leak_totals(const Leak* leaks, size_t count);

}  // namespace zmm
