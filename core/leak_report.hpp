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

// What the reachability scan found a block to be (ZMM_LEAKS=lost); `live`
// when no scan ran (ZMM_LEAKS=all: every live block is a leak, as ZendMM).
// `gone`: freed between the request's end and its scan (a process-wide
// request's share ends before the scan): neither leaked nor reachable.
enum class Leak_kind : uint8_t { live = 0, reachable, indirect, definite, gone };

// A leak the report lists as such (live: found without a scan), reported once.
inline bool is_listed_leak(Leak_kind k) { return k == Leak_kind::live || k == Leak_kind::indirect || k == Leak_kind::definite; }

struct Leak {
    uintptr_t address;
    uint64_t size;   // requested (rounded when not traced)
    uint32_t stack;  // stack depot id, 0 if none
    Leak_kind kind;
    bool reported;   // reported lost by an earlier request: not again
};

// What the reachability scan did (leak_scan), for the report.
struct Scan_info {
    bool ran;                 // false: no scan (ZMM_LEAKS=all), or it could not run
    bool failed;              // ZMM_LEAKS=lost, but the scan could not run (no memory,
                              // no descriptor for /proc/self/maps): every live block listed
    unsigned threads;         // stopped for it (the scanning thread not counted)
    unsigned threads_missed;  // that did not stop (the signal blocked): read as they ran
    uint64_t bytes;           // read: roots and reached blocks
    uint64_t ns;              // the whole scan, the other threads stopped
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
    Scan_info scan;
    const char* suppressions;  // ZMM_SUPPRESSIONS (null: the built-in ones only)
};

// Writes the report of a request whose live blocks are `leaks` (reordered
// here). Reported as leaks: blocks of kind live (no scan), definite or
// indirect, unless `reported` already or suppressed (suppressions.hpp);
// still-reachable and suppressed ones are counted in one line. Text: nothing
// for a request without leaks unless `always`; JSON: one object for every
// request. Returns the number of blocks reported as leaks. `fd`
// k_report_file: the report file (ZMM_LOG, else stderr), opened only when
// there is something to write (a process that ended clean leaves no empty
// log file behind, as a sanitizer's log_path does not).
inline constexpr int k_report_file = -1;
size_t write_leak_report(int fd, const Request_summary& r, Leak* leaks, size_t count, bool always);

// The frames of a stored stack, one line each ("#k 0xPC in function
// file:line (module+0xOFFSET)"), as the leak report writes them.
void write_frames(Text& t, uint32_t stack);
// JSON: a string (escaped; bytes that are not UTF-8 become U+FFFD), and a
// stored stack's "frames":[...] member, as the JSON report writes them.
void json_string(Text& t, const char* s);
// Text: s with its control characters (a newline would start a line of its
// own, as if zmm's) shown as '?'.
void printable(Text& t, const char* s);
void json_frames(Text& t, uint32_t stack);

}  // namespace zmm
