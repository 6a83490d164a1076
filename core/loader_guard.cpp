#include "loader_guard.hpp"

namespace zmm::loader {

namespace detail {
Gate g_gate;
}  // namespace detail

void before_fork() { detail::g_gate.close(); }

// In the child the other threads (and their calls) are gone.
void after_fork() { detail::g_gate.open(); }

}  // namespace zmm::loader
