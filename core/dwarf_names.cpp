#include "dwarf_names.hpp"

#include "loader_guard.hpp"

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <elfutils/libdwfl.h>

extern "C" char* __cxa_demangle(const char* mangled, char* buf, size_t* len, int* status) __attribute__((weak));

namespace zmm::dwarf_names {
namespace {

// libdw's entry points, looked up once.
struct Libdw {
    decltype(&dwfl_begin) begin;
    decltype(&dwfl_report_begin_add) report_begin_add;
    decltype(&dwfl_report_elf) report_elf;
    decltype(&dwfl_report_end) report_end;
    decltype(&dwfl_addrmodule) addrmodule;
    decltype(&dwfl_module_addrname) addrname;
    decltype(&dwfl_module_getsrc) getsrc;
    decltype(&dwfl_lineinfo) lineinfo;
    Dwfl_Callbacks callbacks;
    bool ok;
};

Libdw g_dw;
bool g_dw_tried = false;
char* g_debuginfo_path = nullptr;

template <class F>
bool resolve(void* lib, const char* name, F& out) {
    out = reinterpret_cast<F>(dlsym(lib, name));
    return out != nullptr;
}

using Demangle_fn = char* (*)(const char*, char*, size_t*, int*);

// libstdc++'s demangler, if the process has one by now: bound at load time
// when the program links libstdc++, else looked up (a C++ library dlopen'ed
// later brings it).
Demangle_fn demangler() {
    if (__cxa_demangle) return __cxa_demangle;
    static Demangle_fn found = nullptr;
    static bool tried = false;
    if (!found && !tried) {
        found = reinterpret_cast<Demangle_fn>(dlsym(RTLD_DEFAULT, "__cxa_demangle"));
        if (!found) {  // a C++ program without libstdc++ loaded: bring one, privately
            tried = true;
            if (void* lib = loader::open_library("libstdc++.so.6"))
                found = reinterpret_cast<Demangle_fn>(dlsym(lib, "__cxa_demangle"));
        }
    }
    return found;
}

}  // namespace

bool load() {
    if (g_dw_tried) return g_dw.ok;
    g_dw_tried = true;
    void* lib = loader::open_library("libdw.so.1");
    if (!lib) return false;
    Libdw d{};
    bool ok = resolve(lib, "dwfl_begin", d.begin) && resolve(lib, "dwfl_report_begin_add", d.report_begin_add) &&
              resolve(lib, "dwfl_report_elf", d.report_elf) && resolve(lib, "dwfl_report_end", d.report_end) &&
              resolve(lib, "dwfl_addrmodule", d.addrmodule) && resolve(lib, "dwfl_module_addrname", d.addrname) &&
              resolve(lib, "dwfl_module_getsrc", d.getsrc) && resolve(lib, "dwfl_lineinfo", d.lineinfo) &&
              resolve(lib, "dwfl_build_id_find_elf", d.callbacks.find_elf) &&
              resolve(lib, "dwfl_standard_find_debuginfo", d.callbacks.find_debuginfo) &&
              resolve(lib, "dwfl_offline_section_address", d.callbacks.section_address);
    d.callbacks.debuginfo_path = &g_debuginfo_path;
    d.ok = ok;
    g_dw = d;
    return ok;
}

Module* open_module(const char* path, uintptr_t base) {
    if (!load()) return nullptr;
    Dwfl* d = g_dw.begin(&g_dw.callbacks);
    if (!d) return nullptr;
    g_dw.report_begin_add(d);
    g_dw.report_elf(d, path, path, -1, base, false);
    g_dw.report_end(d, nullptr, nullptr);
    return reinterpret_cast<Module*>(d);
}

void copy(char* out, size_t n, const char* s) {
    size_t len = strlen(s);
    if (len >= n) len = n - 1;
    memcpy(out, s, len);
    out[len] = 0;
}

void set_function(char* out, size_t n, const char* name) {
    if (!name) return;
    Demangle_fn demangle = name[0] == '_' && name[1] == 'Z' ? demangler() : nullptr;
    if (demangle) {
        int status = -1;
        char* d = demangle(name, nullptr, nullptr, &status);
        if (status == 0 && d) {
            copy(out, n, d);
            free(d);
            return;
        }
        free(d);
    }
    copy(out, n, name);
}

void lookup(Module* m, uintptr_t at, char* function, size_t function_size, char* file, size_t file_size,
            unsigned* line) {
    function[0] = file[0] = 0;
    *line = 0;
    if (!m || !g_dw.ok) return;
    Dwfl_Module* mod = g_dw.addrmodule(reinterpret_cast<Dwfl*>(m), at);
    if (!mod) return;
    set_function(function, function_size, g_dw.addrname(mod, at));
    if (Dwfl_Line* l = g_dw.getsrc(mod, at)) {
        int lineno = 0;
        const char* f = g_dw.lineinfo(l, nullptr, &lineno, nullptr, nullptr, nullptr);
        if (f) {
            copy(file, file_size, f);
            *line = static_cast<unsigned>(lineno);
        }
    }
}

}  // namespace zmm::dwarf_names
