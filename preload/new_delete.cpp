// C++ operator new and delete, every form, without a run-time dependency on
// libstdc++: libzmm.so is preloaded into C programs too. The few libstdc++
// pieces the contract needs (the new_handler, throwing std::bad_alloc) are
// weak references, present whenever the program is C++ with libstdc++.
//
// new: the new_handler loop; no handler → std::bad_alloc (nothrow forms
// return nullptr). A throwing handler inside a nothrow new ends in
// std::terminate (this file has no catch; documented in the README).

#include <cerrno>
#include <cstddef>
#include <new>

#include "api.hpp"
#include "diag.hpp"
#include "format.hpp"

extern "C" {
// std::get_new_handler() and std::__throw_bad_alloc(), from libstdc++ if loaded.
std::new_handler _ZSt15get_new_handlerv() noexcept __attribute__((weak));
[[noreturn]] void _ZSt17__throw_bad_allocv() __attribute__((weak));
}

namespace {

using zmm::api::aligned;
using zmm::api::malloc;

[[noreturn]] void throw_bad_alloc() {
    if (_ZSt17__throw_bad_allocv) _ZSt17__throw_bad_allocv();
    zmm::panic("out of memory in operator new, and no C++ runtime to throw std::bad_alloc");
}

// Returns nullptr when there is no handler to try: the caller throws or not.
template <class Alloc>
void* new_loop(Alloc alloc) {
    for (;;) {
        if (void* p = alloc()) return p;
        std::new_handler handler = _ZSt15get_new_handlerv ? _ZSt15get_new_handlerv() : nullptr;
        if (!handler) return nullptr;
        handler();
    }
}

// The fast path's miss, out of line and reached by a tail call, so that a
// hit keeps no frame (and saves no register) for it.
// (Its return address is the program's: the unwinding of a traced
// allocation starts from its frame.)
__attribute__((noinline)) void* new_throwing_slow(size_t n) {
    void* p = zmm::api::malloc_slow(n, __builtin_frame_address(0));
    if (p) return p;
    p = new_loop([n] { return malloc(n); });
    if (!p) throw_bad_alloc();
    return p;
}

__attribute__((noinline)) void* new_nothrow_slow(size_t n) noexcept {
    void* p = zmm::api::malloc_slow(n, __builtin_frame_address(0));
    if (p) return p;
    return new_loop([n] { return malloc(n); });
}

inline void* new_throwing(size_t n) {
    if (void* p = zmm::api::malloc_fast(n); __builtin_expect(p != nullptr, 1)) return p;
    return new_throwing_slow(n);
}

inline void* new_nothrow(size_t n) noexcept {
    if (void* p = zmm::api::malloc_fast(n); __builtin_expect(p != nullptr, 1)) return p;
    return new_nothrow_slow(n);
}

void* new_aligned_throwing(size_t n, std::align_val_t al) {
    size_t a = static_cast<size_t>(al);
    void* p = new_loop([n, a] { return aligned(a, n); });
    if (!p) throw_bad_alloc();
    return p;
}

void* new_aligned_nothrow(size_t n, std::align_val_t al) noexcept {
    size_t a = static_cast<size_t>(al);
    return new_loop([n, a] { return aligned(a, n); });
}

}  // namespace

#define ZMM_EXPORT __attribute__((visibility("default")))

ZMM_EXPORT void* operator new(size_t n) { return new_throwing(n); }
ZMM_EXPORT void* operator new[](size_t n) { return new_throwing(n); }
ZMM_EXPORT void* operator new(size_t n, const std::nothrow_t&) noexcept { return new_nothrow(n); }
ZMM_EXPORT void* operator new[](size_t n, const std::nothrow_t&) noexcept { return new_nothrow(n); }
ZMM_EXPORT void* operator new(size_t n, std::align_val_t a) { return new_aligned_throwing(n, a); }
ZMM_EXPORT void* operator new[](size_t n, std::align_val_t a) { return new_aligned_throwing(n, a); }
ZMM_EXPORT void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return new_aligned_nothrow(n, a);
}
ZMM_EXPORT void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return new_aligned_nothrow(n, a);
}

ZMM_EXPORT void operator delete(void* p) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete[](void* p) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete(void* p, size_t n) noexcept {
    zmm::api::free_sized(p, n, __builtin_return_address(0));
}
ZMM_EXPORT void operator delete[](void* p, size_t n) noexcept {
    zmm::api::free_sized(p, n, __builtin_return_address(0));
}
ZMM_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete(void* p, std::align_val_t) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete[](void* p, std::align_val_t) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete(void* p, size_t, std::align_val_t) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete[](void* p, size_t, std::align_val_t) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { zmm::api::free(p); }
ZMM_EXPORT void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { zmm::api::free(p); }
