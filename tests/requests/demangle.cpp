// Reproduction: demangled names in a C++ program that runs without
// libstdc++ at start-up (tests/requests, driven by check.py).
//
// This program uses nothing from libstdc++, and is linked with --as-needed,
// so libstdc++.so.6 is not loaded at start-up ("demangle"); with the argument
// "dlopen" it loads libstdc++ itself before the request, as an interpreter
// loading a C++ extension does. Either way the report must name the leak's
// frame #0 `shapes::Circle::make(int)` (issue 3: demangled names for every
// frame that has a symbol), not `_ZN6shapes6Circle4makeEi`.
#include <zmm/zmm.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace shapes {
struct Circle {
    static void* make(int radius);
};
__attribute__((noinline)) void* Circle::make(int radius) { return malloc(static_cast<size_t>(radius)); }
}  // namespace shapes

void* volatile g_sink;

int main(int argc, char** argv) {
    if (argc > 1 && strcmp(argv[1], "dlopen") == 0 && !dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL)) {
        printf("cannot load libstdc++.so.6\n");
        return 2;
    }
    printf("libstdc++ %s\n", dlopen("libstdc++.so.6", RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "not loaded");
    fflush(stdout);
    zmm_request_begin("demangle");
    g_sink = shapes::Circle::make(100);
    long leaked = zmm_request_end();
    printf("leaked %ld\n", leaked);
    return 0;
}
