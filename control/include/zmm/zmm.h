/* zmm.h: requests, memory limits and usage for programs running on zmm.
 *
 * zmm (libzmm.so, preloaded) serves the program's malloc from a ZendMM-style
 * heap. Between zmm_request_begin() and zmm_request_end() on a thread, every
 * allocation of that thread is request-bound: counted, limited, and reported
 * as a leak if still live at the end.
 *
 * The header works with or without libzmm.so: the functions are weak
 * references, and each call below goes through a macro that checks the
 * function is there, else asks dlsym(RTLD_DEFAULT, ...) once (a program
 * linked without -pie has its weak references set to 0 by the linker, even
 * with libzmm.so preloaded). Without zmm the calls do nothing and say so:
 * zmm_request_begin/zmm_request_end/zmm_set_memory_limit return -1, the usage
 * functions 0, zmm_active 0. Link with nothing (glibc older than 2.34:
 * -ldl); preload libzmm.so to activate. Programs that bind with
 * dlsym(RTLD_DEFAULT, "zmm_request_begin") get the same functions.
 *
 * Define ZMM_NO_SHIM before including to get plain declarations (for a
 * program linked against libzmm.so directly).
 */
#ifndef ZMM_ZMM_H
#define ZMM_ZMM_H

#include <stddef.h>
#if !defined(ZMM_NO_SHIM)
#include <dlfcn.h>
#include <string.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ZMM_NO_SHIM)
#define ZMM_DECL
#else
#define ZMM_DECL __attribute__((weak))
#endif

/* Begins a request on the calling thread. `name` (copied; may be NULL) names
 * it in reports. Returns the request's id (> 0), or -1 if a request is
 * already open on this thread (nothing changes) or zmm is not active. */
ZMM_DECL int zmm_request_begin(const char* name);

/* Ends the calling thread's request: reports its leaks and returns their
 * number, or -1 if no request was open. With ZMM_LEAKS=lost (the default) the
 * leaks are the blocks the program lost (nothing in the process reaches them
 * any more), suppressed ones not counted; with ZMM_LEAKS=all every block the
 * request allocated and did not free (ZendMM's rule). */
ZMM_DECL long zmm_request_end(void);

/* Bytes in use by the current request (or by the process when none is open).
 * real == 0: bytes in blocks, as PHP's memory_get_usage(); real != 0: bytes
 * of memory taken from the OS (chunks and huge blocks), as
 * memory_get_usage(true). */
ZMM_DECL size_t zmm_memory_usage(int real);

/* The peak of the same figure over the current request (or the process). */
ZMM_DECL size_t zmm_memory_peak_usage(int real);

/* The memory limit for the current and later requests of this thread, in
 * bytes of OS memory (ZendMM's memory_limit); SIZE_MAX for none. Returns 0,
 * or -1 if zmm is not active or the current request already uses more. */
ZMM_DECL int zmm_set_memory_limit(size_t bytes);

/* Called when an allocation would take a request past its limit, before the
 * configured action (ZMM_LIMIT_ACTION). It may longjmp out (as PHP's bailout
 * does); if it returns, the action follows. NULL removes the handler. */
typedef void (*zmm_limit_handler)(size_t limit, size_t requested, void* arg);
ZMM_DECL void zmm_set_limit_handler(zmm_limit_handler handler, void* arg);

/* 1 if the program runs on zmm's heap, 0 if not (or under ZMM_ALLOC=0). */
ZMM_DECL int zmm_active(void);

#undef ZMM_DECL

#if !defined(ZMM_NO_SHIM)
/* The function `name` by dlsym, looked up once per call site's function
 * (`*cache`: 0 not yet, 1 absent); NULL when absent. (A data pointer:
 * converted to the function's type by memcpy, as ISO C has it.) */
static inline void* zmm_shim_lookup_(const char* name, void** cache) {
    void* p = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(((void*)0) /* RTLD_DEFAULT */, name);
        if (!p) p = (void*)1;
        __atomic_store_n(cache, p, __ATOMIC_RELEASE);
    }
    return p == (void*)1 ? (void*)0 : p;
}
/* fn: the weak reference if the linker resolved it, else dlsym's. */
#define ZMM_SHIM_BIND_(fn)                                         \
    __typeof__(&fn) fn##_p = &fn;                                  \
    if (!fn##_p) {                                                 \
        static void* cache;                                        \
        void* found = zmm_shim_lookup_(#fn, &cache);               \
        memcpy(&fn##_p, &found, sizeof fn##_p);                    \
    }
static inline int zmm_shim_request_begin_(const char* name) {
    ZMM_SHIM_BIND_(zmm_request_begin)
    return zmm_request_begin_p ? zmm_request_begin_p(name) : -1;
}
static inline long zmm_shim_request_end_(void) {
    ZMM_SHIM_BIND_(zmm_request_end)
    return zmm_request_end_p ? zmm_request_end_p() : -1L;
}
static inline size_t zmm_shim_memory_usage_(int real) {
    ZMM_SHIM_BIND_(zmm_memory_usage)
    return zmm_memory_usage_p ? zmm_memory_usage_p(real) : (size_t)0;
}
static inline size_t zmm_shim_memory_peak_usage_(int real) {
    ZMM_SHIM_BIND_(zmm_memory_peak_usage)
    return zmm_memory_peak_usage_p ? zmm_memory_peak_usage_p(real) : (size_t)0;
}
static inline int zmm_shim_set_memory_limit_(size_t bytes) {
    ZMM_SHIM_BIND_(zmm_set_memory_limit)
    return zmm_set_memory_limit_p ? zmm_set_memory_limit_p(bytes) : -1;
}
static inline void zmm_shim_set_limit_handler_(zmm_limit_handler handler, void* arg) {
    ZMM_SHIM_BIND_(zmm_set_limit_handler)
    if (zmm_set_limit_handler_p) zmm_set_limit_handler_p(handler, arg);
}
static inline int zmm_shim_active_(void) {
    ZMM_SHIM_BIND_(zmm_active)
    return zmm_active_p ? zmm_active_p() : 0;
}
#undef ZMM_SHIM_BIND_
#define zmm_request_begin(name) zmm_shim_request_begin_(name)
#define zmm_request_end() zmm_shim_request_end_()
#define zmm_memory_usage(real) zmm_shim_memory_usage_(real)
#define zmm_memory_peak_usage(real) zmm_shim_memory_peak_usage_(real)
#define zmm_set_memory_limit(bytes) zmm_shim_set_memory_limit_(bytes)
#define zmm_set_limit_handler(handler, arg) zmm_shim_set_limit_handler_(handler, arg)
#define zmm_active() zmm_shim_active_()
#endif

#ifdef __cplusplus
}
#endif

#endif /* ZMM_ZMM_H */
