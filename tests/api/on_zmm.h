/* Does this process allocate from libzmm.so? Shared by the api tests (C and C++).
 *
 * A contract test that passes on glibc proves nothing about zmm, so each test
 * first finds the module that defines `symbol` (malloc, operator new, ...) as the
 * dynamic linker resolved it for this program, by two independent routes:
 * dlsym(RTLD_DEFAULT) and dladdr() of the address the program itself calls.
 *
 * ZMM_EXPECT=1 in the environment (ctest sets it): both must name a file whose
 * name contains "libzmm", else the test fails at once. Without it the test only
 * says which allocator it is checking, so it can be run on plain glibc to check
 * the test itself.
 *
 * Returns 1 when on zmm, 0 when not (and not expected). */
#ifndef ZMM_TESTS_API_ON_ZMM_H
#define ZMM_TESTS_API_ON_ZMM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline const char* on_zmm_module_of(const void* addr) {
    Dl_info info;
    if (addr == NULL || dladdr(addr, &info) == 0 || info.dli_fname == NULL) return "(unknown)";
    return info.dli_fname;
}

static inline int on_zmm_check(const char* test, const char* symbol, const void* called) {
    const char* expect = getenv("ZMM_EXPECT");
    int expected = expect != NULL && strcmp(expect, "1") == 0;
    const char* by_called = on_zmm_module_of(called);
    const char* by_dlsym = on_zmm_module_of(dlsym(RTLD_DEFAULT, symbol));
    int zmm = strstr(by_called, "libzmm") != NULL && strstr(by_dlsym, "libzmm") != NULL;
    if (expected && !zmm) {
        fprintf(stderr,
                "%s: FAIL: ZMM_EXPECT=1 but %s is not zmm's: the program calls it in %s, "
                "dlsym(RTLD_DEFAULT) finds it in %s (LD_PRELOAD=%s)\n",
                test, symbol, by_called, by_dlsym, getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "(unset)");
        exit(2);
    }
    fprintf(stderr, "%s: %s comes from %s%s\n", test, symbol, by_called,
            zmm ? " (zmm)" : expected ? "" : " (not zmm; ZMM_EXPECT unset, checking this allocator)");
    return zmm;
}

#endif
