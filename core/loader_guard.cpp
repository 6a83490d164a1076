#include "loader_guard.hpp"

#include "spin_lock.hpp"

namespace zmm::loader {

namespace detail {
Gate g_gate;
constinit thread_local unsigned t_uses __attribute__((tls_model("initial-exec"))) = 0;
}  // namespace detail

namespace {
constinit Spin_lock g_closer;  // one closer at a time: fork, or exclusively()
}  // namespace

bool try_exclusively(void (*fn)()) {
    if (!g_closer.try_lock()) return false;  // (a fork under way)
    bool closed = detail::g_gate.try_close(1000);
    if (closed) {
        fn();
        detail::g_gate.open();
    }
    g_closer.unlock();
    return closed;
}

void before_fork() {
    g_closer.lock();
    detail::g_gate.close();
}

void after_fork_parent() {
    detail::g_gate.open();
    g_closer.unlock();
}
// In the child the other threads (and their calls) are gone: a count one
// of them had raised when memory was copied would close the next fork.
void after_fork_child() {
    detail::g_gate.reset();
    g_closer.reset();
}

}  // namespace zmm::loader
