// Fatal diagnostics. The heap calls these when a program misuses it (double
// free, unknown pointer, overwritten free list); they print one line and
// abort. A hook makes the fatal path observable in unit tests (jemalloc's
// idea): the hook runs instead of abort() and may longjmp out.
#pragma once

#include <cstdint>

namespace zmm {

enum class Misuse {
    double_free,
    unknown_pointer,
    interior_pointer,
    heap_corrupted,
    size_mismatch,
    overflow,           // ZMM_DEBUG: the canary after a block was overwritten
    write_after_free,   // ZMM_DEBUG: a freed block's poison was overwritten
};

using Abort_hook = void (*)(Misuse, const void* ptr, const char* message);
void set_abort_hook(Abort_hook hook);

// Where reports go: stderr, or a log file (ZMM_LOG; %p becomes the pid at
// the time of writing, so a forked child writes its own). The file is opened
// for each report and closed after it: zmm keeps no descriptor the program
// could see, close, or find reused under it. Fatal messages go to stderr as
// well when the reports go to a file.
void set_report_path(const char* pattern);  // nullptr: stderr
// An fd to write one report to (2 when the log cannot be opened); give it
// back with report_close.
int report_open();
void report_close(int fd);
// A write to the report file `fd` failed with `error` (ENOSPC, EIO): said
// once on stderr, when the report file is not stderr. (Text::flush calls it.)
void note_report_write_failed(int fd, int error);

// Prints "zmm: <what> 0x..." (+ optional detail) and aborts (or calls the hook).
[[noreturn]] void misuse(Misuse kind, const void* ptr, const char* detail = nullptr);

// Prints "zmm: <message>" and aborts; for broken internal invariants.
[[noreturn]] void panic(const char* message);

// One-line warning on the report fd, e.g. for a malformed option.
void warn(const char* a, const char* b = nullptr, const char* c = nullptr, const char* d = nullptr,
          const char* e = nullptr);

}  // namespace zmm
