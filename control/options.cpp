#include "options.hpp"

#include <cstdint>

#include "diag.hpp"

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
}  // namespace


bool load_options(char** env) {
    if (!env) return false;
    Options o;
    for (char** e = env; *e; ++e) {
        const char* s = *e;
        if (s[0] != 'Z' || s[1] != 'M' || s[2] != 'M' || s[3] != '_') continue;
        const char* v;
#define ZMM_OPTION(var, type, field, def, help)                                 \
    if ((v = value_of(s, #var)) != nullptr) {                                   \
        if (!parse_option(v, o.field)) warn("ignoring malformed " #var "=", v, \
                                            " (using the default)");            \
        continue;                                                               \
    }
#include "options.def"
#undef ZMM_OPTION
    }
    g_options = o;
    return true;
}

}  // namespace zmm
