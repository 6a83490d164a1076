/* zmm.h: requests, memory limits and usage for programs running on zmm.
 *
 * zmm (libzmm.so, preloaded) serves the program's malloc from a ZendMM-style
 * heap. Between zmm_request_begin() and zmm_request_end() on a thread, every
 * allocation of that thread is request-bound: counted, limited, and reported
 * as a leak if still live at the end.
 *
 * The header works with or without libzmm.so: the functions are weak
 * references, and each call below goes through a macro that checks the
 * function is there. Without zmm the calls do nothing and say so:
 * zmm_request_begin/zmm_request_end/zmm_set_memory_limit return -1, the usage
 * functions 0, zmm_active 0. Link with nothing; preload libzmm.so to
 * activate. Programs that bind with dlsym(RTLD_DEFAULT, "zmm_request_begin")
 * get the same functions.
 *
 * Define ZMM_NO_SHIM before including to get plain declarations (for a
 * program linked against libzmm.so directly).
 */
#ifndef ZMM_ZMM_H
#define ZMM_ZMM_H

#include <stddef.h>

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
/* A parenthesised name is not a macro call, so these forward to the real
 * functions when they exist. */
#define zmm_request_begin(name) ((&zmm_request_begin) ? (zmm_request_begin)(name) : -1)
#define zmm_request_end() ((&zmm_request_end) ? (zmm_request_end)() : -1L)
#define zmm_memory_usage(real) ((&zmm_memory_usage) ? (zmm_memory_usage)(real) : (size_t)0)
#define zmm_memory_peak_usage(real) ((&zmm_memory_peak_usage) ? (zmm_memory_peak_usage)(real) : (size_t)0)
#define zmm_set_memory_limit(bytes) ((&zmm_set_memory_limit) ? (zmm_set_memory_limit)(bytes) : -1)
#define zmm_set_limit_handler(handler, arg) \
    ((&zmm_set_limit_handler) ? (zmm_set_limit_handler)(handler, arg) : (void)0)
#define zmm_active() ((&zmm_active) ? (zmm_active)() : 0)
#endif

#ifdef __cplusplus
}
#endif

#endif /* ZMM_ZMM_H */
