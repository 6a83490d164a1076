// zmm's own calls into the dynamic loader: dl_iterate_phdr, dladdr, dlopen,
// dlsym, and libunwind's unwinding (which calls dl_iterate_phdr for every
// frame). They take the loader's locks, which glibc's fork() does not reset
// in the child: a fork while one of them runs on another thread leaves the
// child's loader locked for good (its first backtrace or report hangs).
// zmm's fork handler waits for the calls under way, and none starts until
// the fork is done.
#pragma once

#include <atomic>

namespace zmm::loader {

namespace detail {
extern std::atomic<int> g_users;
extern std::atomic<bool> g_forking;
void wait_for_fork();
}  // namespace detail

// Around a call into the loader. Nests.
struct Use {
    Use() {
        for (;;) {
            detail::g_users.fetch_add(1, std::memory_order_seq_cst);
            if (!detail::g_forking.load(std::memory_order_seq_cst)) return;
            detail::g_users.fetch_sub(1, std::memory_order_seq_cst);
            detail::wait_for_fork();
        }
    }
    ~Use() { detail::g_users.fetch_sub(1, std::memory_order_release); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
};

// fork(): before (waits for the calls under way), after (parent and child).
void before_fork();
void after_fork();

}  // namespace zmm::loader
