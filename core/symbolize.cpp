#include "symbolize.hpp"

#include "loader_guard.hpp"

#include <cerrno>
#include <cstdlib>
#include <csignal>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dwarf_names.hpp"
#include "os.hpp"
#include "spin_lock.hpp"
#include "symbolizer_protocol.hpp"

extern char** environ;

namespace zmm::symbolize {
namespace {

Spin_lock g_lock;
char g_exe[512];

// A module's file ("" in the depot: the main executable).
const char* path_of(const stack_depot::Module& m) { return m.path[0] ? m.path : executable_path(); }

// ---- in the process (ZMM_SYMBOLIZER=0, or the helper failed) ----

// One libdw session per module: a module dlclose'd and another loaded at its
// address keep their own names.
constexpr unsigned k_max_modules = 4096;
dwarf_names::Module* g_per_module[k_max_modules];

dwarf_names::Module* module_names(uint32_t index, const stack_depot::Module& m) {
    if (index >= k_max_modules) return nullptr;
    if (!g_per_module[index]) g_per_module[index] = dwarf_names::open_module(path_of(m), m.base);
    return g_per_module[index];
}

// ---- the helper process, zmm-symbolizer ----
//
// Started at the first frame to name, and never the program's child: a
// clone that shares our memory and raises no SIGCHLD starts it (a second
// clone, which execs it) and exits, so that the helper belongs to init and
// the program's wait(-1) and SIGCHLD handler never see either. The helper
// gets its end of a socket pair as fd 3 and ends when our end is closed.
// Given up for good (names then come from this process) when it cannot be
// started or stops answering.
struct Helper {
    os::Kept_fd socket;  // our end (a fork's child has none)
    pid_t pid = 0;       // the helper, for a kill when it stops answering
    bool off = false;    // ZMM_SYMBOLIZER=0, or given up
};
Helper g_helper;
char g_helper_path[1024];  // ZMM_SYMBOLIZER, or "" (beside libzmm.so)

// How long the helper may take over one answer (the first may read a large
// debug file) before it is given up.
constexpr int k_answer_timeout_ms = 60 * 1000;

// Closes our end (if the number is still ours). `kill_it`: the helper is
// alive but stuck (a dead one's pid may be another process's by now).
void stop_helper(bool kill_it) {
    Helper& h = g_helper;
    h.socket.close_and_forget();
    if (kill_it && h.pid > 0) kill(h.pid, SIGKILL);
    h.pid = 0;
}

void give_up(bool kill_it) {
    stop_helper(kill_it);
    g_helper.off = true;
}

// The helper binary: ZMM_SYMBOLIZER, else zmm-symbolizer beside libzmm.so.
bool helper_binary(char* out, size_t n) {
    if (g_helper_path[0]) {
        dwarf_names::copy(out, n, g_helper_path);
        return true;
    }
    // libzmm.so's file as the kernel names it: absolute, whatever path the
    // loader was given and wherever the program has moved since.
    char lib[1024];
    uintptr_t lo, hi;
    if (!os::mapping_of(reinterpret_cast<uintptr_t>(&locate), &lo, &hi, lib, sizeof lib) || !lib[0]) return false;
    const char* slash = strrchr(lib, '/');
    size_t dir = slash ? static_cast<size_t>(slash - lib) + 1 : 0;
    static const char k_name[] = "zmm-symbolizer";
    if (dir + sizeof k_name > n) return false;
    memcpy(out, lib, dir);
    memcpy(out + dir, k_name, sizeof k_name);
    return true;
}

struct Spawn {
    const char* path;
    char* const* argv;
    char* const* envp;
    int child_end;
    char* stack_top;  // the second clone's
    pid_t helper;     // set by the first clone
};

// The second clone, on its own stack, sharing our memory until execve:
// system calls only (no errno, no libc state).
int exec_helper(void* arg) {
    const Spawn* s = static_cast<const Spawn*>(arg);
    if (s->child_end == static_cast<int>(k_symbolizer_fd))
        syscall(SYS_fcntl, s->child_end, F_SETFD, 0);
    else
        syscall(SYS_dup2, s->child_end, k_symbolizer_fd);
    // None of the program's files: a pipe it waits to see closed, a socket
    // it listens on, its terminal. (The helper closes them itself where
    // close_range is missing.)
    syscall(SYS_close_range, k_symbolizer_fd + 1, ~0u, 0);
    long null = syscall(SYS_open, "/dev/null", O_RDWR);
    if (null >= 0) {
        for (int std = 0; std < 3; ++std)
            if (null != std) syscall(SYS_dup2, null, std);
        if (null > 2 && null != static_cast<long>(k_symbolizer_fd)) syscall(SYS_close, null);
    }
    syscall(SYS_execve, s->path, s->argv, s->envp);
    syscall(SYS_exit, 127);
    return 127;
}

// The first clone: starts the second (which runs until its execve, this
// one waiting), says its pid, and exits, leaving it to init. Its own exit
// signal is none, and it never execs: invisible to the program's waits.
int start_exec_helper(void* arg) {
    Spawn* s = static_cast<Spawn*>(arg);
    s->helper = clone(exec_helper, s->stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, s);
    syscall(SYS_exit, 0);
    return 0;
}

// Whether this process may start a helper. Not when it is PID 1 or a
// child subreaper: the helper, orphaned by design, would be its child, and
// show in its wait(-1). Not under a seccomp filter unless ZMM_SYMBOLIZER
// names the helper: a filter may kill the process for clone or execve
// (systemd's SystemCallFilter does by default).
bool helper_allowed() {
    if (os::process_id() == 1) return false;
    int subreaper = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0) != 0 || subreaper) return false;
    if (g_helper_path[0]) return true;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    const char* seccomp = strstr(buf, "\nSeccomp:");
    return seccomp && strtol(seccomp + 9, nullptr, 10) == 0;
}

bool start_helper() {
    Helper& h = g_helper;
    os::Errno_keeper keep;  // (through the failed calls of a start)
    char path[1024];
    if (!helper_allowed() || !helper_binary(path, sizeof path) || access(path, X_OK) != 0) return false;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
    const int ours = os::move_out_of_the_way(sv[0]);
    // The environment less LD_PRELOAD and ZMM_* (the helper must not run on
    // zmm), and the clones' stacks: mapped, no malloc.
    size_t n_env = 1;  // and ZMM_ALLOC=0
    for (char** e = environ; e && *e; ++e) ++n_env;
    const size_t k_stack = 32 * 1024;  // two stacks
    size_t env_bytes = (n_env + 1) * sizeof(char*);
    char* area = static_cast<char*>(os::map(2 * k_stack + env_bytes));
    if (!area) {
        close(ours);
        close(sv[1]);
        return false;
    }
    char** envp = reinterpret_cast<char**>(area + 2 * k_stack);
    // (Preloaded system-wide, /etc/ld.so.preload, zmm is off in it: the
    // helper never reports, so never starts a helper of its own.)
    static char k_zmm_off[] = "ZMM_ALLOC=0";
    size_t k = 0;
    envp[k++] = k_zmm_off;
    for (char** e = environ; e && *e; ++e)
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0 && strncmp(*e, "ZMM_", 4) != 0) envp[k++] = *e;
    envp[k] = nullptr;
    char* argv[] = {path, nullptr};
    Spawn s{path, argv, envp, sv[1], area + 2 * k_stack, -1};
    // No signal handler of the program may run in the clones (they share
    // our memory): all blocked until execve, which keeps the mask (the
    // helper clears it).
    sigset_t all, old;
    sigfillset(&all);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, _NSIG / 8);
    pid_t first = clone(start_exec_helper, area + k_stack, CLONE_VM | CLONE_VFORK, &s);  // exit signal none
    if (first > 0) {
        int status;
        while (waitpid(first, &status, __WCLONE) < 0 && errno == EINTR) {
        }
    }
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, nullptr, _NSIG / 8);
    os::unmap(area, 2 * k_stack + env_bytes);
    close(sv[1]);
    pid_t pid = first > 0 ? s.helper : -1;
    if (pid <= 0 || !h.socket.keep(ours)) {
        close(ours);
        return false;
    }
    h.pid = pid;
    return true;
}

// A helper of this process, still reachable on our fd; started if none.
bool helper_ready() {
    Helper& h = g_helper;
    if (h.off) return false;
    if (h.socket.is_ours()) return true;
    // None yet, a fork's child (the parent's helper is not ours), or the
    // program closed our fd: a new one.
    stop_helper(false);
    if (start_helper()) return true;
    g_helper.off = true;
    return false;
}

int64_t now_ms() { return static_cast<int64_t>(os::monotonic_ns() / 1'000'000); }

// Receives n bytes by `deadline` (now_ms): signals that interrupt the wait
// (the program's timers, other threads' leak scans) do not extend it.
bool receive_all(int fd, void* buf, size_t n, int64_t deadline, bool& stuck) {
    char* p = static_cast<char*>(buf);
    while (n) {
        struct pollfd pfd{fd, POLLIN, 0};
        int64_t left = deadline - now_ms();
        int ready = left > 0 ? poll(&pfd, 1, static_cast<int>(left)) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready == 0) stuck = true;
        if (ready <= 0) return false;
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

// The helper's names for `at` in the module at `path`, loaded at `base`.
// `stuck`: no answer in time (the helper is alive).
bool ask_helper(const char* path, uintptr_t base, uintptr_t at, Location& out, bool& stuck) {
    int fd = g_helper.socket.fd;
    size_t len = strlen(path);
    if (len > k_symbolizer_max_path) return false;
    Symbolizer_question q{k_symbolizer_magic, static_cast<uint32_t>(len), base, at};
    Symbolizer_answer a;
    const int64_t deadline = now_ms() + k_answer_timeout_ms;
    if (!symbolizer_send(fd, &q, sizeof q) || !symbolizer_send(fd, path, len) ||
        !receive_all(fd, &a, sizeof a, deadline, stuck))
        return false;
    if (a.magic != k_symbolizer_magic || a.function_length >= sizeof out.function || a.file_length >= sizeof out.file)
        return false;
    if (!receive_all(fd, out.function, a.function_length, deadline, stuck) ||
        !receive_all(fd, out.file, a.file_length, deadline, stuck))
        return false;
    out.function[a.function_length] = 0;
    out.file[a.file_length] = 0;
    out.line = a.line;
    return true;
}

// Reports repeat frames (the same callers under many groups): each pc is
// looked up once per process.
struct Cached {
    uintptr_t pc;
    uint32_t module;
    Location location;
};
constexpr size_t k_cache_slots = 2048;
Cached* g_cache = nullptr;

Cached* cache_slot(uintptr_t pc) {
    if (!g_cache) {
        g_cache = static_cast<Cached*>(os::map(k_cache_slots * sizeof(Cached)));
        if (!g_cache) return nullptr;
    }
    return &g_cache[(pc * 0x9E3779B97F4A7C15ull) >> (64 - 11)];
}

const char* basename_of(const char* path) {
    const char* slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}


}  // namespace

void before_fork() { g_lock.lock(); }
void after_fork_parent() { g_lock.unlock(); }
void after_fork_child() {
    g_lock.reset();
    // The helper is the parent's: the child starts its own when it reports.
    stop_helper(false);
}

void prepare(const char* helper) {
    Lock_guard guard(g_lock);
    if (helper && helper[0] == '0' && helper[1] == 0) g_helper.off = true;
    else if (helper) dwarf_names::copy(g_helper_path, sizeof g_helper_path, helper);
    if (g_helper.off) {
        loader::Use use;
        dwarf_names::load();  // (a locate would: there, inside the tool heap)
    }
}

const char* executable_path() {
    if (!g_exe[0]) {
        ssize_t n = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
        g_exe[n > 0 ? n : 0] = 0;
    }
    return g_exe;
}

void locate(const stack_depot::Frame& frame, Location& out) {
    out.function[0] = out.file[0] = 0;
    out.line = 0;
    out.module_name = "?";
    out.offset = frame.pc;
    const stack_depot::Module* m = stack_depot::module(frame.module);
    if (m) {
        out.module_name = basename_of(path_of(*m));
        out.offset = frame.pc - m->base;
    }
    // The return address points after the call: look up the call itself.
    uintptr_t at = frame.pc - 1;
    Lock_guard guard(g_lock);
    Cached* slot = cache_slot(frame.pc);
    if (slot && slot->pc == frame.pc && slot->module == frame.module) {
        out = slot->location;
        return;
    }
    loader::Use use;  // dladdr, and libdw's dlopen in the process
    if (m) {
        bool named = false;
        if (!g_helper.off && helper_ready()) {
            bool stuck = false;
            named = ask_helper(path_of(*m), m->base, at, out, stuck);
            if (!named) give_up(stuck);
        }
        if (!named) {  // (the helper is off for good by now)
            os::Standard_descriptors_held standard_fds;  // libdw's files: not on 0-2
            dwarf_names::lookup(module_names(frame.module, *m), at, out.function, sizeof out.function, out.file,
                                sizeof out.file, &out.line);
        }
    }
    if (!out.function[0]) {
        Dl_info info;
        if (dladdr(reinterpret_cast<void*>(at), &info) && info.dli_sname)
            dwarf_names::set_function(out.function, sizeof out.function, info.dli_sname);
    }
    if (slot) *slot = Cached{frame.pc, frame.module, out};
}

}  // namespace zmm::symbolize
