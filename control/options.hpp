// Options, read once from the environment by scanning environ: no getenv, no
// allocation, usable from the first malloc of the process. A malformed value
// is reported once, naming the variable, and the default is used.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm {

struct Path {
    char text[256] = {};
};
enum class Request_mode { api, signal, process };
enum class Limit_action { fatal, enomem };
enum class Leaks_mode { lost, all, none };
enum class Log_format { text, json };
struct Signal_name {
    int number = 0;
};
struct Exit_code {
    int value = -1;  // none
};

namespace option_types {
using flag = bool;
using count = unsigned;
using bytes = size_t;
using path = Path;
using request_mode = Request_mode;
using limit_action = Limit_action;
using leaks_mode = Leaks_mode;
using log_format = Log_format;
using signal_name = Signal_name;
using exit_code = Exit_code;
}  // namespace option_types

// Parsers, one per option type; each returns false on a malformed value.
// constexpr, so that the defaults are in place before any constructor runs
// (the first malloc of a process can come before them).
//   flag: 0 or 1;  count: decimal, at most 1000000;
//   bytes: 123, 64K, 128M, 2G, 2GB, -1 (= SIZE_MAX);  path: 1..255 bytes
constexpr bool parse_option(const char* s, bool& out) {
    if ((s[0] == '0' || s[0] == '1') && s[1] == 0) {
        out = s[0] == '1';
        return true;
    }
    return false;
}

constexpr bool parse_option(const char* s, unsigned& out) {
    if (!*s) return false;
    uint64_t v = 0;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9') return false;
        v = v * 10 + static_cast<unsigned>(*s - '0');
        if (v > 1000000) return false;
    }
    out = static_cast<unsigned>(v);
    return true;
}

constexpr bool parse_option(const char* s, size_t& out) {
    if (s[0] == '-' && s[1] == '1' && s[2] == 0) {
        out = SIZE_MAX;
        return true;
    }
    if (*s < '0' || *s > '9') return false;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; ++s) {
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + static_cast<unsigned>(*s - '0');
    }
    unsigned shift = 0;
    switch (*s) {
    case 0: break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    default: return false;
    }
    if (*s && s[1] != 0 && !((s[1] == 'B' || s[1] == 'b') && s[2] == 0)) return false;
    if (shift && v > (UINT64_MAX >> shift)) return false;
    out = static_cast<size_t>(v << shift);
    return true;
}

constexpr bool same(const char* a, const char* b) {
    while (*a && *a == *b) {
        ++a;
        ++b;
    }
    return *a == *b;
}

constexpr bool parse_option(const char* s, Request_mode& out) {
    if (same(s, "api")) return out = Request_mode::api, true;
    if (same(s, "signal")) return out = Request_mode::signal, true;
    if (same(s, "process")) return out = Request_mode::process, true;
    return false;
}

constexpr bool parse_option(const char* s, Limit_action& out) {
    if (same(s, "fatal")) return out = Limit_action::fatal, true;
    if (same(s, "enomem")) return out = Limit_action::enomem, true;
    return false;
}

constexpr bool parse_option(const char* s, Leaks_mode& out) {
    if (same(s, "lost")) return out = Leaks_mode::lost, true;
    if (same(s, "all")) return out = Leaks_mode::all, true;
    if (same(s, "0")) return out = Leaks_mode::none, true;
    return false;
}

constexpr bool parse_option(const char* s, Log_format& out) {
    if (same(s, "text")) return out = Log_format::text, true;
    if (same(s, "json")) return out = Log_format::json, true;
    return false;
}

constexpr bool same_letters(const char* a, const char* b) {  // ASCII, any case
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    while (*a && lower(*a) == lower(*b)) {
        ++a;
        ++b;
    }
    return lower(*a) == lower(*b);
}

// zmm's own signals (SIGRTMAX-4: the leak scan stops threads with it;
// SIGRTMAX-3: a process-wide request's switch), on Linux's SIGRTMAX of 64.
inline constexpr int k_scan_signal_number = 60, k_switch_signal_number = 61;

// USR1 or USR2 (any case, SIG before it or not: 10, 12), or a real-time
// signal's number, 34..64 but zmm's own two. No other: a fault signal
// (SEGV, BUS, ILL, FPE, TRAP, ABRT, SYS) would toggle the request where the
// program should die, and after the faulting instruction returned fault again
// for ever; the others the kernel sends by itself (CHLD, PIPE, ALRM, WINCH,
// terminal and job control) or that stop a program (INT, TERM, HUP, QUIT)
// would toggle requests at the kernel's whim, or leave the program unable
// to stop.
constexpr bool parse_option(const char* s, Signal_name& out) {
    if (same_letters(s, "USR1") || same_letters(s, "SIGUSR1")) return out.number = 10, true;
    if (same_letters(s, "USR2") || same_letters(s, "SIGUSR2")) return out.number = 12, true;
    unsigned n = 0;
    if (!parse_option(s, n)) return false;
    if (n != 10 && n != 12 && (n < 34 || n > 64 || n == k_scan_signal_number || n == k_switch_signal_number))
        return false;
    out.number = static_cast<int>(n);
    return true;
}

constexpr bool parse_option(const char* s, Exit_code& out) {
    if (same(s, "none")) return out.value = -1, true;
    unsigned n = 0;
    if (!parse_option(s, n) || n > 255) return false;
    out.value = static_cast<int>(n);
    return true;
}

constexpr bool parse_option(const char* s, Path& out) {
    size_t len = 0;
    while (s[len]) ++len;
    if (len == 0 || len >= sizeof out.text) return false;
    for (size_t i = 0; i <= len; ++i) out.text[i] = s[i];
    return true;
}


// What a malformed value's warning says the option takes (nullptr: the
// option's line in the README says it).
template <class T>
constexpr const char* expected_form(const T&) {
    return nullptr;
}
constexpr const char* expected_form(const Signal_name&) { return "USR1, USR2, or a real-time signal 34-59 or 62-64"; }

struct Options {
#define ZMM_OPTION(var, type, field, def, help) option_types::type field{};
#include "options.def"
#undef ZMM_OPTION
    constexpr Options() {  // the defaults of options.def
#define ZMM_OPTION(var, type, field, def, help) \
    if (def[0]) parse_option(def, field);
#include "options.def"
#undef ZMM_OPTION
    }
};

// The options in force (the defaults until load_options ran).
extern Options g_options;  // (set by load_options)
inline const Options& options() { return g_options; }

// Parses the environment `env` (normally environ) into the process options.
// Returns false if env is null (too early in start-up: call again later).
bool load_options(char** env);

}  // namespace zmm
