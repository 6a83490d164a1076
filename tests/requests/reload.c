// A library unloaded, and another loaded at its addresses: the second's
// backtraces must be its own. (Reproduction: zmm's unwinders kept the first
// library's rules for the same return address, libunwind's unw_backtrace
// its per-thread cache, and the depot named the first library as the frame's
// module; the second library's allocation then had one frame, in the wrong
// module.)
//
//   reload LIB_A LIB_B [warm]: request 'a' calls LIB_A's alloc_here three
//   times and frees each block (its stack is unwound, its rules cached);
//   LIB_A is closed, LIB_B opened (reload_lib.S: same code layout, another
//   frame), request 'b' keeps one block of LIB_B's alloc_here, called from
//   caller_b. With `warm`, a request before LIB_A is opened: zmm is ready to
//   unwind (as under ZMM_REQUEST=process) before the library exists.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "zmm/zmm.h"

typedef void* (*Alloc_fn)(void);

__attribute__((noinline)) void* caller_a(Alloc_fn f) {
    void* p = f();
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) void* caller_b(Alloc_fn f) {
    void* p = f();
    __asm__ volatile("" ::: "memory");
    return p;
}

static Alloc_fn open_alloc(const char* path, void** handle) {
    *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*handle) {
        printf("FAIL dlopen %s: %s\n", path, dlerror());
        exit(1);
    }
    Alloc_fn f;
    *(void**)&f = dlsym(*handle, "alloc_here");
    if (!f) {
        printf("FAIL no alloc_here in %s\n", path);
        exit(1);
    }
    return f;
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: reload LIB_A LIB_B [warm]\n");
        return 2;
    }
    if (argc > 3) {
        zmm_request_begin("warm");
        free(malloc(16));
        zmm_request_end();
    }
    void* a;
    Alloc_fn fa = open_alloc(argv[1], &a);
    zmm_request_begin("a");
    for (int i = 0; i < 3; ++i) free(caller_a(fa));
    printf("request a leaked %ld\n", zmm_request_end());
    dlclose(a);

    void* b;
    Alloc_fn fb = open_alloc(argv[2], &b);
    // The case needs the second library at the first one's addresses (the
    // loader maps an object of the same size into the hole the first left).
    if (fb != fa) printf("FAIL the second library is not at the first one's address\n");
    zmm_request_begin("b");
    void* kept = caller_b(fb);
    printf("request b leaked %ld\n", zmm_request_end());
    printf("kept %p\n", kept);
    printf("ok\n");
    return 0;
}
