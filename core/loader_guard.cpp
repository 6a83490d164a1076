#include "loader_guard.hpp"

namespace zmm::loader {

namespace detail {
Gate g_gate;
constinit thread_local unsigned t_uses __attribute__((tls_model("initial-exec"))) = 0;
}  // namespace detail

void before_fork() { detail::g_gate.close(); }

void after_fork_parent() { detail::g_gate.open(); }
// In the child the other threads (and their calls) are gone: a count one
// of them had raised when memory was copied would close the next fork.
void after_fork_child() { detail::g_gate.reset(); }

}  // namespace zmm::loader
