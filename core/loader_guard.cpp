#include "loader_guard.hpp"

#include <dlfcn.h>
#include <sys/single_threaded.h>

namespace zmm::loader {

namespace detail {
Gate g_gate;
constinit thread_local unsigned t_uses __attribute__((tls_model("initial-exec"))) = 0;
bool g_may_be_locked = false;  // for good, and in the child's own children
}  // namespace detail

namespace {
bool g_forking_with_threads = false;  // written by the forking thread
}  // namespace

void before_fork() {
    detail::g_gate.close();
    // (glibc clears it for good at the first pthread_create.)
    g_forking_with_threads = !__libc_single_threaded;
}

void* open_library(const char* name) { return may_be_locked() ? nullptr : dlopen(name, RTLD_NOW | RTLD_LOCAL); }

void after_fork_parent() { detail::g_gate.open(); }
// In the child the other threads (and their calls) are gone: a count one
// of them had raised when memory was copied would close the next fork.
void after_fork_child() {
    detail::g_gate.reset();
    if (g_forking_with_threads) detail::g_may_be_locked = true;
}

}  // namespace zmm::loader
