// zmm's own calls into the dynamic loader: dl_iterate_phdr, dladdr, dlopen,
// dlsym, and libunwind's unwinding (which calls dl_iterate_phdr for every
// frame). They take the loader's locks, which glibc's fork() does not reset
// in the child: a fork while one of them runs on another thread leaves the
// child's loader locked for good (its first backtrace or report hangs).
// zmm's fork handler waits for the calls under way, and none starts until
// the fork is done.
#pragma once

#include "gate.hpp"

namespace zmm::loader {

namespace detail {
extern Gate g_gate;  // closed while fork() runs
extern constinit thread_local unsigned t_uses __attribute__((tls_model("initial-exec")));
extern bool g_may_be_locked;  // may_be_locked()
}  // namespace detail

// Around a call into the loader; not nested (gate.hpp).
struct Use {
    Use() : shard_(detail::g_gate.enter()) { ++detail::t_uses; }
    ~Use() {
        --detail::t_uses;
        detail::g_gate.leave(shard_);
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

private:
    unsigned shard_;
};

// Is this thread inside a Use (a dlopen zmm makes itself, say)?
inline bool in_use() { return detail::t_uses != 0; }

// In a child forked while the program had other threads, one of them may
// have been inside the loader: glibc's fork() resets the child's dl_load_lock
// but not the lock dl_iterate_phdr takes (dlopen and dlclose hold it while
// they change the list of objects), so in the child dl_iterate_phdr may wait
// for good, and so does any dlopen of a new object. zmm then finds code
// with _dl_find_object, which takes no lock (object_headers), and goes
// without what only the lock gives: the loader's counts and its look for
// unloads, libunwind (every frame a dl_iterate_phdr) and the dlopen of
// libunwind or libdw not loaded before the fork.
// (Read on every traced allocation: inline, a load.)
inline bool may_be_locked() { return detail::g_may_be_locked; }

// zmm's own dlopen of a library (RTLD_NOW | RTLD_LOCAL), inside the
// caller's Use: nullptr, as for a library that is missing, in a child whose
// loader may be locked, where it would wait for good.
void* open_library(const char* name);

// fork(): before (waits for the calls under way), after (parent and child).
void before_fork();
void after_fork_parent();
void after_fork_child();

}  // namespace zmm::loader
