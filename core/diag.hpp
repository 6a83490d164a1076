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
};

using Abort_hook = void (*)(Misuse, const void* ptr, const char* message);
void set_abort_hook(Abort_hook hook);

// Where reports go: stderr by default (or a duplicate of it, which survives a
// program that closes its stderr before exit, as coreutils do), or the log
// file. Fatal messages go to stderr as well when the reports go to a file.
void set_report_fd(int fd, bool is_stderr);
int report_fd();

// Prints "zmm: <what> 0x..." (+ optional detail) and aborts (or calls the hook).
[[noreturn]] void misuse(Misuse kind, const void* ptr, const char* detail = nullptr);

// Prints "zmm: <message>" and aborts; for broken internal invariants.
[[noreturn]] void panic(const char* message);

// One-line warning on the report fd, e.g. for a malformed option.
void warn(const char* a, const char* b = nullptr, const char* c = nullptr);

}  // namespace zmm
