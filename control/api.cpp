// The zmm_* functions of zmm.h, exported by libzmm.so.

#define ZMM_NO_SHIM
#include "zmm/zmm.h"

#include "request.hpp"
#include "leak_scan.hpp"
#include "thread_heap.hpp"

#define ZMM_EXPORT extern "C" __attribute__((visibility("default")))

ZMM_EXPORT int zmm_request_begin(const char* name) { return zmm::request_begin(name); }
// zmm_request_end pushes the program's callee-saved registers (a pointer the
// program keeps only in a register across the call still counts) and calls
// request_end_from with the address of the last one: the leak scan reads the
// program's stack from there up, and nothing of zmm's frames below.
extern "C" __attribute__((visibility("hidden"), used)) long zmm_request_end_from(const void* frame) {
    zmm::t_state.scan_from = frame;
    long n = zmm::request_end();
    zmm::t_state.scan_from = nullptr;
    return n;
}

asm(R"(
    .text
    .globl zmm_request_end
    .type zmm_request_end, @function
zmm_request_end:
    .cfi_startproc
    push %rbx
    .cfi_adjust_cfa_offset 8
    push %rbp
    .cfi_adjust_cfa_offset 8
    push %r12
    .cfi_adjust_cfa_offset 8
    push %r13
    .cfi_adjust_cfa_offset 8
    push %r14
    .cfi_adjust_cfa_offset 8
    push %r15
    .cfi_adjust_cfa_offset 8
    mov %rsp, %rdi
    sub $8, %rsp
    .cfi_adjust_cfa_offset 8
    call zmm_request_end_from
    add $8, %rsp
    .cfi_adjust_cfa_offset -8
    pop %r15
    .cfi_adjust_cfa_offset -8
    pop %r14
    .cfi_adjust_cfa_offset -8
    pop %r13
    .cfi_adjust_cfa_offset -8
    pop %r12
    .cfi_adjust_cfa_offset -8
    pop %rbp
    .cfi_adjust_cfa_offset -8
    pop %rbx
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size zmm_request_end, .-zmm_request_end
)");
ZMM_EXPORT size_t zmm_memory_usage(int real) { return zmm::memory_usage(real != 0); }
ZMM_EXPORT size_t zmm_memory_peak_usage(int real) { return zmm::memory_peak_usage(real != 0); }
ZMM_EXPORT int zmm_set_memory_limit(size_t bytes) { return zmm::set_memory_limit(bytes); }
ZMM_EXPORT void zmm_set_limit_handler(zmm_limit_handler handler, void* arg) {
    zmm::set_limit_handler(handler, arg);
}
ZMM_EXPORT int zmm_active(void) { return zmm::bypassed() ? 0 : 1; }
