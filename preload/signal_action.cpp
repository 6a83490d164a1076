// sigaction and signal: each handler the program installs runs inside a
// Handler_scope (reentry.hpp), so that what it allocates or frees never
// touches the heap of the thread it interrupted, whatever that thread was
// doing (a free list half popped, a page run half split). The program sees
// its own handlers: a query returns what it installed, flags included.
//
// Handlers installed by raw system call are not wrapped; zmm's slow paths
// still divert the allocations of those that land inside them.
// siginterrupt() is interposed too: glibc's rewrites the kernel's action
// behind the program's copy here, and its record of interrupting signals,
// which glibc's signal() consults, is private to glibc.

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <pthread.h>
#include <ucontext.h>

#include "libc_symbols.hpp"
#include "reentry.hpp"
#include "thread_heap.hpp"

namespace {

using Action_fn = int (*)(int, const struct sigaction*, struct sigaction*);
using Info_handler = void (*)(int, siginfo_t*, void*);
using Plain_handler = void (*)(int);

// What the program installed, per signal: its handler and whether it takes
// siginfo (SA_SIGINFO).
struct Program_handler {
    std::atomic<void*> fn;
    std::atomic<bool> info;
};
Program_handler g_handlers[_NSIG];

Action_fn real_sigaction() {
    static Action_fn real = nullptr;
    if (!real) real = reinterpret_cast<Action_fn>(zmm::libc::symbol("sigaction"));
    return real;
}

void call_program_handler(int sig, siginfo_t* info, void* context) {
    void* fn = g_handlers[sig].fn.load(std::memory_order_acquire);
    if (!fn) return;
    if (g_handlers[sig].info.load(std::memory_order_relaxed))
        reinterpret_cast<Info_handler>(fn)(sig, info, context);
    else
        reinterpret_cast<Plain_handler>(fn)(sig);
}

void run_program_handler(int sig, siginfo_t* info, void* context) {
    if (zmm::bypassed()) return call_program_handler(sig, info, context);  // glibc's malloc: its own rules
    uintptr_t alt_lo = 0, alt_hi = 0;
    if (auto* uc = static_cast<ucontext_t*>(context); uc && !(uc->uc_stack.ss_flags & SS_DISABLE)) {
        alt_lo = reinterpret_cast<uintptr_t>(uc->uc_stack.ss_sp);
        alt_hi = alt_lo + uc->uc_stack.ss_size;
    }
    zmm::Handler_scope scope(alt_lo, alt_hi);
    call_program_handler(sig, info, context);
}

bool is_function(const struct sigaction* act) {
    return act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN && act->sa_handler != SIG_HOLD;
}

// The kernel's view of `old`, translated back to the program's handler
// (`fn`, taking siginfo if `info`) when it is the wrapper.
void as_program_sees(struct sigaction* old, void* fn, bool info) {
    if (old->sa_sigaction != run_program_handler) return;
    old->sa_sigaction = reinterpret_cast<Info_handler>(fn);
    if (!info) old->sa_flags &= ~SA_SIGINFO;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int sigaction(int sig, const struct sigaction* act,
                                                               struct sigaction* old) {
    Action_fn real = real_sigaction();
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    // Passed through: queries, dispositions that are not functions, zmm's own
    // handlers, and the wrapper itself (read back by a raw rt_sigaction):
    // installing it again keeps the program's handler.
    if (!act || zmm::t_state.own_sigaction || sig <= 0 || sig >= _NSIG || !is_function(act) ||
        act->sa_sigaction == run_program_handler) {
        int rc = real(sig, act, old);
        if (rc == 0 && old && sig > 0 && sig < _NSIG)
            as_program_sees(old, g_handlers[sig].fn.load(std::memory_order_acquire),
                            g_handlers[sig].info.load(std::memory_order_relaxed));
        return rc;
    }
    struct sigaction wrapped = *act;
    wrapped.sa_sigaction = run_program_handler;
    wrapped.sa_flags |= SA_SIGINFO;
    // The table first: a signal delivered once the kernel has the wrapper
    // finds the new handler. (One delivered just before may run the new
    // handler too: the kernel's own switch is no finer for a handler that
    // changes while a signal is pending.)
    void* previous = g_handlers[sig].fn.load(std::memory_order_relaxed);
    bool previous_info = g_handlers[sig].info.load(std::memory_order_relaxed);
    g_handlers[sig].info.store((act->sa_flags & SA_SIGINFO) != 0, std::memory_order_relaxed);
    g_handlers[sig].fn.store(reinterpret_cast<void*>(act->sa_sigaction), std::memory_order_release);
    int rc = real(sig, &wrapped, old);
    if (rc != 0) {
        g_handlers[sig].info.store(previous_info, std::memory_order_relaxed);
        g_handlers[sig].fn.store(previous, std::memory_order_release);
        return rc;
    }
    if (old) as_program_sees(old, previous, previous_info);
    return rc;
}

namespace {
// signal() and its aliases: glibc implements them on its internal sigaction,
// which the interposed one does not see.
sighandler_t install(int sig, sighandler_t handler, int flags) {
    if (handler == SIG_ERR) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction act{}, old{};
    act.sa_handler = handler;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (!(flags & SA_NODEFER) && sig > 0 && sig < _NSIG) sigaddset(&act.sa_mask, sig);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}
}  // namespace

namespace {
// Signals siginterrupt(sig, 1) asked to interrupt system calls: signal()
// then installs their handlers without SA_RESTART, as glibc's does.
std::atomic<uint64_t> g_interrupting[(_NSIG + 63) / 64];
bool interrupting(int sig) {
    return sig > 0 && sig < _NSIG && (g_interrupting[sig / 64].load(std::memory_order_relaxed) >> (sig % 64) & 1);
}
}  // namespace

// BSD semantics, as glibc's signal(): restarted calls (unless siginterrupt
// said otherwise), the signal blocked in its handler; bsd_signal and
// ssignal are the same.
extern "C" __attribute__((visibility("default"))) sighandler_t signal(int sig, sighandler_t handler) {
    return install(sig, handler, interrupting(sig) ? 0 : SA_RESTART);
}

// The signal's system calls interrupted (flag 1) or restarted (0), now and
// for later signal() calls: the SA_RESTART flag of the kernel's action, as
// glibc's does. Whatever handler is there stays as it is (the wrapper of
// the program's, or one of zmm's own); queries read the flags from the
// kernel.
extern "C" __attribute__((visibility("default"))) int siginterrupt(int sig, int flag) {
    Action_fn real = real_sigaction();
    struct sigaction act;
    if (!real || sig <= 0 || sig >= _NSIG || real(sig, nullptr, &act) != 0) {
        errno = EINVAL;
        return -1;
    }
    const uint64_t bit = uint64_t{1} << (sig % 64);
    if (flag) {
        g_interrupting[sig / 64].fetch_or(bit, std::memory_order_relaxed);
        act.sa_flags &= ~SA_RESTART;
    } else {
        g_interrupting[sig / 64].fetch_and(~bit, std::memory_order_relaxed);
        act.sa_flags |= SA_RESTART;
    }
    return real(sig, &act, nullptr);
}
extern "C" __attribute__((visibility("default"), alias("signal"))) sighandler_t bsd_signal(int, sighandler_t) noexcept;
extern "C" __attribute__((visibility("default"), alias("signal"))) sighandler_t ssignal(int, sighandler_t) noexcept;
// System V's sigset(): SIG_HOLD blocks the signal; anything else installs
// the disposition (no flags, nothing blocked in the handler) and unblocks
// it. Returns SIG_HOLD if the signal was blocked, else the previous one.
extern "C" __attribute__((visibility("default"))) sighandler_t sigset(int sig, sighandler_t disposition) {
    if (sig <= 0 || sig >= _NSIG || disposition == SIG_ERR) {
        errno = EINVAL;
        return SIG_ERR;
    }
    sigset_t one, old_mask;
    sigemptyset(&one);
    sigaddset(&one, sig);
    const bool hold = disposition == SIG_HOLD;
    struct sigaction act{}, old{};
    act.sa_handler = disposition;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, hold ? nullptr : &act, &old) != 0 ||
        pthread_sigmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &one, &old_mask) != 0)
        return SIG_ERR;
    return sigismember(&old_mask, sig) ? SIG_HOLD : old.sa_handler;
}

// System V semantics: reset to the default on delivery, not blocked in the
// handler (what signal() binds to in a strict ISO C program).
extern "C" __attribute__((visibility("default"))) sighandler_t sysv_signal(int sig, sighandler_t handler) {
    return install(sig, handler, SA_RESETHAND | SA_NODEFER);
}
extern "C" __attribute__((visibility("default"), alias("sysv_signal"))) sighandler_t __sysv_signal(int, sighandler_t) noexcept;
