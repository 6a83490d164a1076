// The zmm_* functions of zmm.h, exported by libzmm.so.

#define ZMM_NO_SHIM
#include "zmm/zmm.h"

#include "request.hpp"
#include "leak_scan.hpp"
#include "thread_heap.hpp"

#define ZMM_EXPORT extern "C" __attribute__((visibility("default")))

ZMM_EXPORT int zmm_request_begin(const char* name) { return zmm::request_begin(name); }
// noinline: the scan reads the caller's stack from this frame up.
ZMM_EXPORT __attribute__((noinline)) long zmm_request_end(void) {
    zmm::leak_scan::Program_frame frame;
    return zmm::request_end();
}
ZMM_EXPORT size_t zmm_memory_usage(int real) { return zmm::memory_usage(real != 0); }
ZMM_EXPORT size_t zmm_memory_peak_usage(int real) { return zmm::memory_peak_usage(real != 0); }
ZMM_EXPORT int zmm_set_memory_limit(size_t bytes) { return zmm::set_memory_limit(bytes); }
ZMM_EXPORT void zmm_set_limit_handler(zmm_limit_handler handler, void* arg) {
    zmm::set_limit_handler(handler, arg);
}
ZMM_EXPORT int zmm_active(void) { return zmm::bypassed() ? 0 : 1; }
