#include "libc_symbols.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <elf.h>
#include <link.h>
#include <type_traits>

namespace zmm::libc {
namespace {

struct Library {
    ElfW(Addr) base;
    const ElfW(Sym)* symtab;
    const char* strtab;
    const uint32_t* gnu_hash;
    const ElfW(Half)* versym;
};

bool ends_with_libc(const char* name) {
    const char* want = "/libc.so.6";
    size_t n = strlen(name), w = strlen(want);
    return n >= w && strcmp(name + n - w, want) == 0;
}

int find_libc(struct dl_phdr_info* info, size_t, void* data) {
    if (!info->dlpi_name || !ends_with_libc(info->dlpi_name)) return 0;
    Library* lib = static_cast<Library*>(data);
    lib->base = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
        auto* dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        for (; dyn->d_tag != DT_NULL; ++dyn) {
            // In the loaded image these entries are already relocated.
            switch (dyn->d_tag) {
            case DT_SYMTAB: lib->symtab = reinterpret_cast<const ElfW(Sym)*>(dyn->d_un.d_ptr); break;
            case DT_STRTAB: lib->strtab = reinterpret_cast<const char*>(dyn->d_un.d_ptr); break;
            case DT_GNU_HASH: lib->gnu_hash = reinterpret_cast<const uint32_t*>(dyn->d_un.d_ptr); break;
            case DT_VERSYM: lib->versym = reinterpret_cast<const ElfW(Half)*>(dyn->d_un.d_ptr); break;
            default: break;
            }
        }
    }
    // The loader relocates these entries in place; should it one day leave
    // them as offsets, rebase them.
    auto rebase = [&](auto*& p) {
        if (p && reinterpret_cast<ElfW(Addr)>(p) < lib->base)
            p = reinterpret_cast<std::remove_reference_t<decltype(p)>>(reinterpret_cast<ElfW(Addr)>(p) + lib->base);
    };
    rebase(lib->symtab);
    rebase(lib->strtab);
    rebase(lib->gnu_hash);
    rebase(lib->versym);
    return 1;
}

uint32_t gnu_hash(const char* s) {
    uint32_t h = 5381;
    for (; *s; ++s) h = h * 33 + static_cast<unsigned char>(*s);
    return h;
}

const Library* libc_library() {
    static Library lib;
    static std::atomic<int> state{0};  // 0 not looked up, 1 found, 2 absent
    int s = state.load(std::memory_order_acquire);
    if (s == 0) {
        Library found{};
        dl_iterate_phdr(find_libc, &found);
        if (found.symtab && found.strtab && found.gnu_hash) {
            lib = found;
            state.store(1, std::memory_order_release);
        } else {
            state.store(2, std::memory_order_release);
        }
        s = state.load(std::memory_order_acquire);
    }
    return s == 1 ? &lib : nullptr;
}

}  // namespace

void* symbol(const char* name) {
    const Library* lib = libc_library();
    if (!lib) return nullptr;
    const uint32_t* h = lib->gnu_hash;
    uint32_t nbuckets = h[0], symoffset = h[1], bloom_size = h[2];
    const uint32_t* buckets = h + 4 + bloom_size * (sizeof(ElfW(Addr)) / 4);
    const uint32_t* chain = buckets + nbuckets;
    uint32_t hash = gnu_hash(name);
    uint32_t idx = buckets[hash % nbuckets];
    if (idx < symoffset) return nullptr;
    for (;; ++idx) {
        uint32_t h2 = chain[idx - symoffset];
        if ((hash | 1) == (h2 | 1)) {
            const ElfW(Sym)* sym = &lib->symtab[idx];
            bool hidden_version = lib->versym && (lib->versym[idx] & 0x8000);
            if (sym->st_shndx != SHN_UNDEF && !hidden_version && strcmp(lib->strtab + sym->st_name, name) == 0)
                return reinterpret_cast<void*>(lib->base + sym->st_value);
        }
        if (h2 & 1) return nullptr;
    }
}

const Functions& functions() {
    static Functions f;
    static std::atomic<bool> ready{false};
    if (!ready.load(std::memory_order_acquire)) {
        Functions r{};
        r.malloc = reinterpret_cast<void* (*)(size_t)>(symbol("__libc_malloc"));
        r.free = reinterpret_cast<void (*)(void*)>(symbol("__libc_free"));
        r.calloc = reinterpret_cast<void* (*)(size_t, size_t)>(symbol("__libc_calloc"));
        r.realloc = reinterpret_cast<void* (*)(void*, size_t)>(symbol("__libc_realloc"));
        r.memalign = reinterpret_cast<void* (*)(size_t, size_t)>(symbol("__libc_memalign"));
        r.dlopen = reinterpret_cast<void* (*)(const char*, int)>(symbol("dlopen"));
        r.dlclose = reinterpret_cast<int (*)(void*)>(symbol("dlclose"));
        r.mallopt = reinterpret_cast<int (*)(int, int)>(symbol("mallopt"));
        r.malloc_trim = reinterpret_cast<int (*)(size_t)>(symbol("malloc_trim"));
        r.malloc_stats = reinterpret_cast<void (*)()>(symbol("malloc_stats"));
        r.malloc_info = reinterpret_cast<int (*)(int, void*)>(symbol("malloc_info"));
        r.mallinfo2 = symbol("mallinfo2");
        f = r;
        ready.store(true, std::memory_order_release);
    }
    return f;
}

}  // namespace zmm::libc
