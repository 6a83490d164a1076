#include "symbolize.hpp"

#include "loader_guard.hpp"

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <elfutils/libdwfl.h>
#include <unistd.h>

#include "os.hpp"
#include "spin_lock.hpp"

extern "C" char* __cxa_demangle(const char* mangled, char* buf, size_t* len, int* status) __attribute__((weak));

namespace zmm::symbolize {
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

Spin_lock g_lock;
Libdw g_dw;
bool g_dw_tried = false;
char* g_debuginfo_path = nullptr;
char g_exe[512];

// One Dwfl per module: a module dlclose'd and another loaded at its address
// keep their own names.
constexpr unsigned k_max_modules = 4096;
Dwfl* g_per_module[k_max_modules];

template <class F>
bool resolve(void* lib, const char* name, F& out) {
    out = reinterpret_cast<F>(dlsym(lib, name));
    return out != nullptr;
}

void load_libdw() {
    g_dw_tried = true;
    void* lib = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
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
}

}  // namespace

void before_fork() { g_lock.lock(); }
void after_fork_parent() { g_lock.unlock(); }
void after_fork_child() { g_lock.reset(); }

void prepare() {
    if (g_dw_tried) return;
    Lock_guard guard(g_lock);
    loader::Use use;
    if (!g_dw_tried) load_libdw();
}

namespace {

Dwfl* dwfl_for(uint32_t index, const stack_depot::Module& m) {
    if (index >= k_max_modules) return nullptr;
    if (g_per_module[index]) return g_per_module[index];
    Dwfl* d = g_dw.begin(&g_dw.callbacks);
    if (!d) return nullptr;
    g_dw.report_begin_add(d);
    const char* path = m.path[0] ? m.path : executable_path();
    g_dw.report_elf(d, path, path, -1, m.base, false);
    g_dw.report_end(d, nullptr, nullptr);
    g_per_module[index] = d;
    return d;
}

void copy(char* out, size_t n, const char* s) {
    size_t len = strlen(s);
    if (len >= n) len = n - 1;
    memcpy(out, s, len);
    out[len] = 0;
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
            if (void* lib = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_LOCAL))
                found = reinterpret_cast<Demangle_fn>(dlsym(lib, "__cxa_demangle"));
        }
    }
    return found;
}

void set_function(Location& out, const char* name) {
    if (!name) return;
    Demangle_fn demangle = name[0] == '_' && name[1] == 'Z' ? demangler() : nullptr;
    if (demangle) {
        int status = -1;
        char* d = demangle(name, nullptr, nullptr, &status);
        if (status == 0 && d) {
            copy(out.function, sizeof out.function, d);
            free(d);
            return;
        }
        free(d);
    }
    copy(out.function, sizeof out.function, name);
}

const char* basename_of(const char* path) {
    const char* slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

// Reports repeat frames (the same callers under many groups): each pc is
// looked up once per process.
struct Cached {
    uintptr_t pc;
    uint32_t module;
    Location location;
};
constexpr size_t k_cache_slots = 2048;
Cached* g_cache = nullptr;

Cached* cache_slot(uintptr_t pc) {
    if (!g_cache) {
        g_cache = static_cast<Cached*>(os::map(k_cache_slots * sizeof(Cached)));
        if (!g_cache) return nullptr;
    }
    return &g_cache[(pc * 0x9E3779B97F4A7C15ull) >> (64 - 11)];
}

}  // namespace

const char* executable_path() {
    if (!g_exe[0]) {
        ssize_t n = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
        g_exe[n > 0 ? n : 0] = 0;
    }
    return g_exe;
}

void locate(const stack_depot::Frame& frame, Location& out) {
    out.function[0] = out.file[0] = 0;
    out.line = 0;
    out.module_name = "?";
    out.offset = frame.pc;
    const stack_depot::Module* m = stack_depot::module(frame.module);
    if (m) {
        out.module_name = basename_of(m->path[0] ? m->path : executable_path());
        out.offset = frame.pc - m->base;
    }
    // The return address points after the call: look up the call itself.
    uintptr_t at = frame.pc - 1;
    Lock_guard guard(g_lock);
    Cached* slot = cache_slot(frame.pc);
    if (slot && slot->pc == frame.pc && slot->module == frame.module) {
        out = slot->location;
        return;
    }
    loader::Use use;  // libdw, dladdr, dlopen of the demangler
    if (!g_dw_tried) load_libdw();
    if (m && g_dw.ok) {
        if (Dwfl* d = dwfl_for(frame.module, *m)) {
            if (Dwfl_Module* mod = g_dw.addrmodule(d, at)) {
                set_function(out, g_dw.addrname(mod, at));
                if (Dwfl_Line* line = g_dw.getsrc(mod, at)) {
                    int lineno = 0;
                    const char* file = g_dw.lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr);
                    if (file) {
                        copy(out.file, sizeof out.file, file);
                        out.line = static_cast<unsigned>(lineno);
                    }
                }
            }
        }
    }
    if (!out.function[0]) {
        Dl_info info;
        if (dladdr(reinterpret_cast<void*>(at), &info) && info.dli_sname) set_function(out, info.dli_sname);
    }
    if (slot) *slot = Cached{frame.pc, frame.module, out};
}

}  // namespace zmm::symbolize
