#include "loader_guard.hpp"

#include <sched.h>

namespace zmm::loader {

namespace detail {
std::atomic<int> g_users{0};
std::atomic<bool> g_forking{false};

void wait_for_fork() {
    while (g_forking.load(std::memory_order_acquire)) sched_yield();
}
}  // namespace detail

void before_fork() {
    detail::g_forking.store(true, std::memory_order_seq_cst);
    while (detail::g_users.load(std::memory_order_seq_cst) != 0) sched_yield();
}

void after_fork() {
    // In the child the other threads (and their calls) are gone.
    detail::g_forking.store(false, std::memory_order_release);
}

}  // namespace zmm::loader
