// pthread_sigmask and sigprocmask: zmm's internal signals stay deliverable.
//
// The leak scan stops threads with a signal, and the process-wide request
// switches them with another; a thread that blocks every signal (a worker of
// a server whose main thread alone takes signals, `sigfillset` then
// pthread_sigmask) would otherwise never stop and cost each scan its
// timeout. Boehm's collector does the same for its suspend signal. Both
// handlers leave the program's state alone (errno is saved), so taking them
// inside a section the program shields from its own handlers is harmless.

#include <cerrno>
#include <csignal>

#include "leak_scan.hpp"
#include "libc_symbols.hpp"
#include "process_request.hpp"

namespace {

using Mask_fn = int (*)(int, const sigset_t*, sigset_t*);

// The set the program asked for, less zmm's signals, in `copy`; or `set`
// itself when nothing is to change.
const sigset_t* without_internal(int how, const sigset_t* set, sigset_t* copy) {
    if (!set || how == SIG_UNBLOCK) return set;
    int stop = zmm::leak_scan::stop_signal(), sw = zmm::process_request::switch_signal();
    if ((!stop || !sigismember(set, stop)) && (!sw || !sigismember(set, sw))) return set;
    *copy = *set;
    if (stop) sigdelset(copy, stop);
    if (sw) sigdelset(copy, sw);
    return copy;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int pthread_sigmask(int how, const sigset_t* set,
                                                                     sigset_t* old) {
    static Mask_fn real = nullptr;
    if (!real) real = reinterpret_cast<Mask_fn>(zmm::libc::symbol("pthread_sigmask"));
    if (!real) return ENOSYS;
    sigset_t copy;
    return real(how, without_internal(how, set, &copy), old);
}

extern "C" __attribute__((visibility("default"))) int sigprocmask(int how, const sigset_t* set, sigset_t* old) {
    static Mask_fn real = nullptr;
    if (!real) real = reinterpret_cast<Mask_fn>(zmm::libc::symbol("sigprocmask"));
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    sigset_t copy;
    return real(how, without_internal(how, set, &copy), old);
}
