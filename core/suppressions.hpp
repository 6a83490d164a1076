// Leak suppressions, in LeakSanitizer's format: lines `leak:PATTERN` (other
// kinds, blank lines and `#` comments are ignored). A pattern matches a
// frame's function name, source file or module name: a substring, with `*`
// for any run of characters, `^` anchoring it at the start and `$` at the
// end. A leak group is suppressed when any frame of its backtrace matches.
//
// Built in: what glibc, libstdc++ and the dynamic loader allocate for
// themselves and keep for the process's life (thread TLS vectors, locale,
// iconv and NSS caches, loader bookkeeping, iostream initialisation).
#pragma once

#include <cstdint>

namespace zmm::suppressions {

// Reads the user's file (once; a later call does nothing). Lines that are
// not understood are reported once each on stderr. path may be null.
void load(const char* path);

// The pattern that suppresses the stored stack, or nullptr.
const char* match(uint32_t stack);

// The matcher itself: does `pattern` match `text`?
bool matches(const char* pattern, const char* text);

}  // namespace zmm::suppressions
