#include "suppressions.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "diag.hpp"
#include "os.hpp"
#include "stack_depot.hpp"
#include "symbolize.hpp"

namespace zmm::suppressions {
namespace {

// Functions (exported names, so that they resolve without debug symbols).
const char* const k_builtin[] = {
    "^_dl_allocate_tls",        // a thread's TLS vector (pthread_create)
    "^_dl_new_object$",         // dlopen's bookkeeping
    "^_dl_map_object",          //
    "^_dl_check_map_versions$", //
    "^_dl_update_slotinfo$",    // dynamic TLS
    "^__tls_get_addr$",         //
    "^pthread_create",          // the thread's structures, cached by glibc
    "^_nl_",                    // locale data (setlocale's cache)
    "^__gconv_",                // iconv's module cache
    "^__nss_",                  // NSS modules and databases
    "ios_base::Init::Init",     // iostream initialisation
};

constexpr unsigned k_max_patterns = 1024;
const char* g_patterns[k_max_patterns];
unsigned g_count = 0;
bool g_loaded = false;

void add(const char* p) {
    if (g_count < k_max_patterns) g_patterns[g_count++] = p;
}

// Matches pattern[0..plen) against text at its start (`*` any run).
bool match_here(const char* pat, size_t plen, const char* text, bool anchored_end) {
    if (plen == 0) return !anchored_end || *text == 0;
    if (*pat == '*') {
        for (const char* t = text;; ++t) {
            if (match_here(pat + 1, plen - 1, t, anchored_end)) return true;
            if (!*t) return false;
        }
    }
    if (!*text || *pat != *text) return false;
    return match_here(pat + 1, plen - 1, text + 1, anchored_end);
}

}  // namespace

bool matches(const char* pattern, const char* text) {
    if (!pattern || !*pattern || !text || !*text) return false;
    bool start = pattern[0] == '^';
    if (start) ++pattern;
    size_t plen = strlen(pattern);
    bool end = plen && pattern[plen - 1] == '$';
    if (end) --plen;
    if (start) return match_here(pattern, plen, text, end);
    for (const char* t = text; *t; ++t)
        if (match_here(pattern, plen, t, end)) return true;
    return false;
}

void load(const char* path) {
    if (g_loaded) return;
    g_loaded = true;
    for (const char* b : k_builtin) add(b);
    if (!path || !*path) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        warn("ZMM_SUPPRESSIONS: cannot open ", path);
        return;
    }
    // The file, whole, in memory from the OS (kept: the patterns point into it).
    size_t cap = 1 << 16, len = 0;
    char* buf = static_cast<char*>(os::map(cap));
    while (buf) {
        if (len + 1 == cap) {
            char* bigger = static_cast<char*>(os::map(cap * 2));
            if (bigger) memcpy(bigger, buf, len);
            os::unmap(buf, cap);
            buf = bigger;
            cap *= 2;
            if (!buf) break;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += static_cast<size_t>(n);
    }
    close(fd);
    if (!buf) return;
    buf[len] = 0;
    for (char* line = buf; line < buf + len;) {
        char* nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char* next = nl ? nl + 1 : buf + len;
        while (*line == ' ' || *line == '\t') ++line;
        size_t l = strlen(line);
        while (l && (line[l - 1] == ' ' || line[l - 1] == '\t' || line[l - 1] == '\r')) line[--l] = 0;
        if (l == 0 || line[0] == '#') {
        } else if (strncmp(line, "leak:", 5) == 0 && line[5]) {
            add(line + 5);
        } else if (!strchr(line, ':')) {
            warn("ZMM_SUPPRESSIONS: not a `kind:pattern` line, ignored: ", line);
        }  // other kinds (race:, ...) belong to other tools
        line = next;
    }
}

const char* match(uint32_t stack) {
    if (!stack || !g_count) return nullptr;
    stack_depot::Frame frames[stack_depot::k_max_frames];
    unsigned n = stack_depot::get(stack, frames, stack_depot::k_max_frames);
    for (unsigned i = 0; i < n; ++i) {
        symbolize::Location loc;
        symbolize::locate(frames[i], loc);
        for (unsigned k = 0; k < g_count; ++k) {
            const char* p = g_patterns[k];
            if (matches(p, loc.function) || matches(p, loc.file) || matches(p, loc.module_name)) return p;
        }
    }
    return nullptr;
}

}  // namespace zmm::suppressions
