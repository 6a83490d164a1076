#include "options.hpp"

#include <cstdint>

#include "diag.hpp"
#include "stack_depot.hpp"

namespace zmm {
constinit Options g_options;

namespace {

// "NAME=value" → value, when the entry is that variable.
const char* value_of(const char* entry, const char* name) {
    while (*name && *entry == *name) {
        ++entry;
        ++name;
    }
    return (*name == 0 && *entry == '=') ? entry + 1 : nullptr;
}

enum Option_index : unsigned {
#define ZMM_OPTION(var, type, field, def, help) k_##var,
#include "options.def"
#undef ZMM_OPTION
    k_option_count
};

constexpr const char* k_option_names[] = {
#define ZMM_OPTION(var, type, field, def, help) #var,
#include "options.def"
#undef ZMM_OPTION
};

// Edit distance (insertions, deletions, substitutions, swaps of two
// neighbours) between a[0..n) and b, if at most 2; else 3. Names are short.
unsigned distance_within_two(const char* a, size_t n, const char* b) {
    constexpr size_t k_max = 40;
    size_t m = 0;
    while (b[m]) ++m;
    if (n > k_max || m > k_max || (n > m ? n - m : m - n) > 2) return 3;
    unsigned d[k_max + 1][k_max + 1];
    for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<unsigned>(i);
    for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<unsigned>(j);
    for (size_t i = 1; i <= n; ++i)
        for (size_t j = 1; j <= m; ++j) {
            unsigned best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m] < 3 ? d[n][m] : 3;
}

// A ZMM_ variable that is no option: named when it is one edit from one (a
// letter missing, added, changed, or two swapped). Other tools' ZMM_
// variables stay unremarked: two edits took the project's own ZMM_LIB for
// ZMM_LOG.
void check_spelling(const char* entry) {
    size_t n = 0;
    while (entry[n] && entry[n] != '=') ++n;
    for (const char* name : k_option_names)
        if (distance_within_two(entry, n, name) <= 1) {
            char own[48];
            size_t k = n < sizeof own - 1 ? n : sizeof own - 1;
            for (size_t i = 0; i < k; ++i) own[i] = entry[i];
            own[k] = 0;
            warn("ignoring ", own, ", which is no zmm option (", name, "?)");
            return;
        }
}
// A well-formed value that zmm cannot honour as it reads, or that defeats
// its option's purpose: said at once.
void check_value(Option_index which, const char* v, Options& o) {
    if (which == k_ZMM_BACKTRACE && o.backtrace > stack_depot::k_max_frames) {
        o.backtrace = stack_depot::k_max_frames;
        warn("ZMM_BACKTRACE=", v, ": zmm keeps at most 64 frames (using 64)");
    }
    if (which == k_ZMM_MEMORY_LIMIT && o.memory_limit < (size_t{2} << 20))
        warn("ZMM_MEMORY_LIMIT=", v,
             " is less than one 2 MiB chunk, the unit in which zmm (as ZendMM) counts a request's memory: "
             "every request that allocates will exceed it");
}
}  // namespace

// The first of two settings of one variable counts, as for getenv (and
// the wrapper); the second is named.
bool load_options(char** env) {
    if (!env) return false;
    Options o;
    bool seen[k_option_count] = {};
    for (char** e = env; *e; ++e) {
        const char* s = *e;
        if (s[0] != 'Z' || s[1] != 'M' || s[2] != 'M' || s[3] != '_') continue;
        const char* v;
#define ZMM_OPTION(var, type, field, def, help)                                                         \
    if ((v = value_of(s, #var)) != nullptr) {                                                           \
        if (seen[k_##var]) {                                                                            \
            warn("ignoring ", s, ": " #var " is set twice (the first one counts, as for getenv)");     \
            continue;                                                                                   \
        }                                                                                               \
        seen[k_##var] = true;                                                                           \
        if (!parse_option(v, o.field)) {                                                                \
            const char* form = expected_form(o.field);                                                  \
            warn("ignoring malformed " #var "=", v, form ? " (using the default; it takes " : " (using the default", \
                 form ? form : "", ")");                                                                \
        } else {                                                                                        \
            check_value(k_##var, v, o);                                                                 \
        }                                                                                               \
        continue;                                                                                       \
    }
#include "options.def"
#undef ZMM_OPTION
        check_spelling(s);
    }
    g_options = o;
    return true;
}

}  // namespace zmm
