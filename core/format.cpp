#include "format.hpp"

#include "diag.hpp"
#include "os.hpp"

namespace zmm {

void Text::reserve(size_t n) {
    if (len_ + n > k_capacity && fd_ >= 0) flush(fd_);
}

Text& Text::str(const char* s, size_t n) {
    while (n > 0) {
        reserve(n);
        size_t room = k_capacity - len_;
        if (room == 0) return *this;  // no fd: truncate
        size_t take = n < room ? n : room;
        for (size_t i = 0; i < take; ++i) buf_[len_ + i] = s[i];
        len_ += take;
        s += take;
        n -= take;
    }
    return *this;
}

Text& Text::str(const char* s) {
    size_t n = 0;
    while (s[n]) ++n;
    return str(s, n);
}

Text& Text::chr(char c) { return str(&c, 1); }

Text& Text::dec(uint64_t v) {
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    return str(tmp + i, sizeof tmp - i);
}

Text& Text::sdec(int64_t v) {
    if (v < 0) {
        chr('-');
        return dec(static_cast<uint64_t>(0) - static_cast<uint64_t>(v));
    }
    return dec(static_cast<uint64_t>(v));
}

Text& Text::dec_padded(uint64_t v, unsigned width) {
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t n = sizeof tmp - i; n < width; ++n) chr(' ');
    return str(tmp + i, sizeof tmp - i);
}

Text& Text::hex(uint64_t v) {
    char tmp[18];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    tmp[--i] = 'x';
    tmp[--i] = '0';
    return str(tmp + i, sizeof tmp - i);
}

Text& Text::bytes_human(uint64_t v) {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    if (v < 1024) return dec(v).str(" B");
    unsigned u = 0;
    uint64_t scaled = v * 10;  // one decimal
    while (scaled >= 10240 && u < 4) {
        scaled /= 1024;
        ++u;
    }
    dec(scaled / 10).chr('.').dec(scaled % 10).chr(' ');
    return str(units[u]);
}

void Text::flush(int fd) {
    if (int failed = os::write_all(fd, buf_, len_)) note_report_write_failed(fd, failed);
    len_ = 0;
}

Text::~Text() {
    if (fd_ >= 0 && len_) flush(fd_);
}

}  // namespace zmm
