// Allocation-free text formatting for reports and diagnostics: a fixed buffer
// that is filled and written with write(2). Never calls the program's malloc
// or stdio, so it is usable inside the allocator and from fatal paths.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm {

class Text {
public:
    Text() = default;
    Text(const Text&) = delete;
    Text& operator=(const Text&) = delete;

    Text& str(const char* s);
    Text& str(const char* s, size_t n);
    Text& chr(char c);
    Text& dec(uint64_t v);
    Text& sdec(int64_t v);
    Text& hex(uint64_t v);        // 0x-prefixed, lower case
    Text& dec_padded(uint64_t v, unsigned width);
    Text& bytes_human(uint64_t v);  // 1.2 MiB, 512 B

    const char* data() const { return buf_; }
    // NUL-terminated view (the buffer always keeps room for the NUL).
    const char* c_str() {
        buf_[len_] = 0;
        return buf_;
    }
    size_t size() const { return len_; }
    void clear() { len_ = 0; }
    // Writes everything to fd and clears. Also done when the buffer fills.
    void flush(int fd);
    void set_fd(int fd) { fd_ = fd; }
    ~Text();

private:
    void reserve(size_t n);
    static constexpr size_t k_capacity = 4096;
    char buf_[k_capacity + 1];
    size_t len_ = 0;
    int fd_ = -1;  // when set, a full buffer is flushed here instead of truncated
};

}  // namespace zmm
