// What libzmm.so and its symbolizer process (zmm-symbolizer) say to each
// other over a socket pair, one question and one answer at a time.
//
//   question: Symbolizer_question, then path_length bytes of the module's path
//   answer:   Symbolizer_answer, then function_length bytes of the function
//             (demangled) and file_length bytes of the file
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <sys/socket.h>

namespace zmm {

inline constexpr uint32_t k_symbolizer_magic = 0x7a6d6d53;  // "zmmS"
inline constexpr unsigned k_symbolizer_fd = 3;              // the helper's end of the pair
inline constexpr uint32_t k_symbolizer_max_path = 4096;

struct Symbolizer_question {
    uint32_t magic;
    uint32_t path_length;  // at most k_symbolizer_max_path
    uint64_t base;         // where the module was loaded
    uint64_t at;           // the address asked about (a return address less one)
};

struct Symbolizer_answer {
    uint32_t magic;
    uint32_t line;  // 0: unknown
    uint16_t function_length;
    uint16_t file_length;
};

// Sends all n bytes (no SIGPIPE when the other end is gone); false if it
// cannot.
inline bool symbolizer_send(int fd, const void* buf, size_t n) {
    const char* p = static_cast<const char*>(buf);
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

}  // namespace zmm
