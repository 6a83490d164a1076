#include "process_request.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "backtrace.hpp"
#include "diag.hpp"
#include "leak_report.hpp"
#include "leak_scan.hpp"
#include "options.hpp"
#include "os.hpp"
#include "request_internal.hpp"
#include "spin_lock.hpp"
#include "symbolize.hpp"
#include "reentry.hpp"
#include "thread_heap.hpp"

namespace zmm::process_request {
namespace {

// Odd while a process-wide request is open; each begin and end adds one.
std::atomic<uint64_t> g_generation{0};
// Threads whose share has not ended, by request: two counters, for the
// request whose end waits for them and the next one, which may begin (and
// be joined) before the report of the last is out. A share still open when
// its request is reported (its thread blocked the switch for the second
// the end waits) is dropped from the count, and reported late on its own.
std::atomic<int> g_open_shares[2] = {};
std::atomic<int>& shares_of(uint64_t opened_generation) { return g_open_shares[(opened_generation >> 1) & 1]; }
int open_shares() {
    return g_open_shares[0].load(std::memory_order_acquire) + g_open_shares[1].load(std::memory_order_acquire);
}

Spin_lock g_lock;  // the leaks and totals of ended shares, the thread list
Leak_list g_leaks;
Share_totals g_totals{};
uint64_t g_id = 0;
uint64_t g_begin_ns = 0;
std::atomic<uint64_t> g_reported_generation{0};  // (written under g_lock)
// Reports being written (the reporter thread's, a late share's): the
// process's exit waits for them.
std::atomic<int> g_writing{0};

// Blocks the process-wide requests' reports listed as lost: each thread
// marks its own (its request heap's table is its alone) when it next joins,
// so that they are not listed again. Under g_lock; only grows.
Mapped_array<uintptr_t> g_reported;

// Internal: "switch now" to one thread (begin: into the request; end: end
// your share). A real-time signal the program is unlikely to use.
int g_switch_signal = 0;
// Bumped by the external toggle; the reporter thread waits on it (a futex:
// no descriptor a program that closes every one, or a daemon's dup2 onto
// 0-2, could take from under it, nor one a forked child shares with its
// parent).
std::atomic<uint32_t> g_wake{0};
uint64_t g_reporter_start = 0;  // the generation when the reporter thread was made
uintptr_t g_own_lo = 0, g_own_hi = 0;  // the allocator's text: "inside zmm"

Thread_ref g_threads[k_max_threads];
bool g_unlisted = false;  // a thread found the list full
// Where the stacks of the last threads that exited were: glibc keeps them
// for reuse, full of dead frames the leak scan must not read as roots.
constexpr unsigned k_dead_stacks = 256;
uintptr_t g_dead_stacks[k_dead_stacks];
unsigned g_dead_next = 0;
unsigned g_thread_count = 0;

bool opened(uint64_t g) { return g & 1; }

// Set by the linker for this object: its ELF header and the end of its code.
extern "C" const char __ehdr_start[] __attribute__((visibility("hidden")));
extern "C" const char __etext[] __attribute__((visibility("hidden")));

void write_report(uint64_t id, Leak_list& leaks, const Share_totals& totals, uint64_t begin_ns);

// ---- the calling thread's share ----

// Has the process-wide request of the share r been reported (the share is
// late)?
bool reported_already(const Request* r) {
    return r->process_wide && g_reported_generation.load(std::memory_order_acquire) > r->generation;
}

// A share that ends after its request's report went out without it (its
// thread blocked the switch signal for the whole second the report waits:
// a raw rt_sigprocmask) is reported on its own, under the request's id.
void end_share() {
    const Request* r = t_state.request;
    Leak_list late;
    Share_totals late_totals{};
    uint64_t late_id = 0, late_begin = 0;
    {
        Lock_guard guard(g_lock);
        const bool reported = r && reported_already(r);
        if (reported) {
            late_id = r->id;
            late_begin = r->begin_ns;
        }
        const uint64_t generation = r ? r->generation : 0;
        if (end_on_thread(reported ? &late : &g_leaks, reported ? &late_totals : &g_totals) < 0) return;
        if (!reported) {
            shares_of(generation).fetch_sub(1, std::memory_order_acq_rel);
            return;
        }
        g_writing.fetch_add(1, std::memory_order_acq_rel);  // (under the lock: the exit sees it)
    }
    write_report(late_id, late, late_totals, late_begin);
    g_writing.fetch_sub(1, std::memory_order_acq_rel);
}

// Was the thread interrupted inside zmm (its fast path, a slow path, a
// backtrace capture, a report) or inside a program's signal handler (whose
// allocations are served elsewhere)? Then it will end its share itself at
// its next slow path.
bool inside_allocator(void* context) {
    if (t_state.busy > 0 || t_state.depth > 0 || t_state.handler_depth > 0) return true;
    auto* uc = static_cast<ucontext_t*>(context);
    uintptr_t pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
    return pc >= g_own_lo && pc < g_own_hi;
}

void on_switch(int, siginfo_t* info, void* context) {
    int saved = errno;
    if (info->si_code == SI_TKILL && info->si_pid == os::process_id()) {
        t_state.switch_pending.store(false, std::memory_order_relaxed);
        Request* r = t_state.request;
        uint64_t g = g_generation.load(std::memory_order_acquire);
        if (r && r->process_wide && r->generation != g) {
            // Its next allocation ends the share: when it was interrupted
            // inside zmm, and when its request is reported already (a late
            // share writes a report of its own: not in a signal handler).
            if (inside_allocator(context) || reported_already(r))
                Handler_scope::send_to_slow_path();
            else
                end_share();
        } else if (opened(g) && !r && t_state.persistent && !t_state.no_requests) {
            Handler_scope::send_to_slow_path();  // its next allocation joins
        }
    }
    errno = saved;
}

// ---- the external toggle (ZMM_REQUEST=signal) ----

void toggle_to(bool open) {
    uint64_t g = g_generation.load(std::memory_order_acquire);
    while (opened(g) != open)
        if (g_generation.compare_exchange_weak(g, g + 1, std::memory_order_acq_rel)) break;
    g_wake.fetch_add(1, std::memory_order_release);
    os::futex_wake(g_wake, 1);
}

void on_request_signal(int, siginfo_t* info, void*) {
    int saved = errno;
    uint64_t g = g_generation.load(std::memory_order_acquire);
    int value = info->si_code == SI_QUEUE ? info->si_value.sival_int : 0;
    if (value == 1)
        toggle_to(true);
    else if (value == 2)
        toggle_to(false);
    else
        toggle_to(!opened(g));
    errno = saved;
}

// One switch at a time per thread: a real-time signal queues, and a thread
// that blocks it (a raw rt_sigprocmask) would collect one per call, 200 a
// request's end, against the user's limit of pending signals.
void signal_threads() {
    Lock_guard guard(g_lock);
    for (unsigned i = 0; i < g_thread_count; ++i) {
        Thread_state* s = g_threads[i].state;
        if (s != &t_state && !s->switch_pending.exchange(true, std::memory_order_relaxed))
            os::tgkill(g_threads[i].tid, g_switch_signal);
    }
}

void report(uint64_t generation) {
    Leak_list leaks;
    Share_totals totals;
    uint64_t id, begin_ns;
    {
        // Taken out under the lock; the report itself (which may allocate,
        // and so register a thread) runs without it.
        Lock_guard guard(g_lock);
        if (g_reported_generation.load(std::memory_order_relaxed) == generation) return;
        g_reported_generation.store(generation, std::memory_order_release);
        g_writing.fetch_add(1, std::memory_order_acq_rel);  // (claimed under the lock: the exit sees it)
        // Shares still open are late now: reported on their own when they
        // end, and no later request's end waits for them. (Unless the
        // request after next, which counts on the same counter, has begun:
        // its shares must not be zeroed; its end may then wait once.)
        if (g_generation.load(std::memory_order_acquire) < generation - 1 + 4)
            shares_of(generation - 1).store(0, std::memory_order_release);
        leaks = g_leaks;
        totals = g_totals;
        g_leaks = Leak_list{};
        g_totals = {};
        id = g_id;
        begin_ns = g_begin_ns;
    }
    write_report(id, leaks, totals, begin_ns);
    g_writing.fetch_sub(1, std::memory_order_acq_rel);
}

void write_report(uint64_t id, Leak_list& leaks, const Share_totals& totals, uint64_t begin_ns) {
    const Options& o = options();
    const char* name = o.request == Request_mode::signal ? "signal" : "process";
    Request_summary s{id, name, static_cast<int>(os::process_id()), os::thread_id(), totals.usage, totals.peak,
                      totals.real_usage, totals.real_peak, thread_limit(), os::monotonic_ns() - begin_ns,
                      o.log_format == Log_format::json, {}, o.suppressions.text};
    Depth_guard depth;
    size_t reported = leaks.count;
    if (o.leaks == Leaks_mode::lost) s.scan = leak_scan::classify(leaks.items, leaks.count);
    if (o.leaks != Leaks_mode::none) {
        symbolize::prepare(options().symbolizer.text);
        Tool_scope tool;  // symbolizing allocates: zmm's memory, not the program's
        reported = write_leak_report(k_report_file, s, leaks.items, leaks.count, o.stats);
    }
    if (reported) g_leaky_requests.fetch_add(1, std::memory_order_relaxed);
    if (o.leaks == Leaks_mode::lost) {
        Lock_guard guard(g_lock);
        for (size_t i = 0; i < leaks.count; ++i) {
            const Leak& l = leaks.items[i];
            if (is_listed_leak(l.kind) && !l.reported) g_reported.push(l.address);
        }
    }
    leaks.release();
}

// Ends the open request: every share ends (threads are signalled until they
// have, for at most a second), then one report.
void close_and_report() {
    uint64_t g = g_generation.load(std::memory_order_acquire);
    if (opened(g)) {
        g_generation.store(g + 1, std::memory_order_release);
        ++g;
    }
    if (t_state.request && t_state.request->process_wide) end_share();
    uint64_t deadline = os::monotonic_ns() + 1'000'000'000u;
    while (shares_of(g - 1).load(std::memory_order_acquire) > 0 && os::monotonic_ns() < deadline) {
        signal_threads();
        timespec pause{0, 5'000'000};
        nanosleep(&pause, nullptr);
    }
    report(g);
}

void open_request() {
    Lock_guard guard(g_lock);
    g_id = g_next_id.fetch_add(1, std::memory_order_relaxed) + 1;
    g_begin_ns = os::monotonic_ns();
}

// ZMM_REQUEST=signal: the toggle only flips the generation; this thread does
// the rest (signalling threads, reporting) outside any signal handler.
void* reporter(void*) {
    t_state.no_requests = true;
    t_state.scan_from = __builtin_frame_address(0);  // no frame of the program's below
    persistent_heap();  // now, not first inside a report
    // The generation when the thread was made, not when it first runs: a
    // toggle that comes in between must not go unseen.
    uint64_t seen = g_reporter_start;
    for (;;) {
        // (The wake count before the generation: a toggle between the two
        // changes the count, and the wait returns at once.)
        const uint32_t wake = g_wake.load(std::memory_order_acquire);
        uint64_t g = g_generation.load(std::memory_order_acquire);
        if (g == seen) {
            os::futex_wait(g_wake, wake);
            continue;
        }
        if (opened(g)) {
            if (!opened(seen)) {
                open_request();
                signal_threads();  // threads on their fast path join now
            }
        } else {
            close_and_report();
        }
        seen = g;
    }
}

bool install(int sig, void (*handler)(int, siginfo_t*, void*)) {
    Own_sigaction own;  // not wrapped as the program's
    struct sigaction old{};
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
        warn("the program already handles the signal ZMM_REQUEST_SIGNAL names; zmm leaves it alone");
        return false;
    }
    struct sigaction sa{};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, nullptr) == 0;
}

}  // namespace

void register_thread() {
    if (t_state.no_requests) return;
    Lock_guard guard(g_lock);
    if (g_thread_count < k_max_threads)
        g_threads[g_thread_count++] = {os::thread_id(), &t_state};
    else
        g_unlisted = true;
}

void unregister_thread() {
    Lock_guard guard(g_lock);
    if (t_state.stack_hint) g_dead_stacks[g_dead_next++ % k_dead_stacks] = t_state.stack_hint;
    for (unsigned i = 0; i < g_thread_count; ++i)
        if (g_threads[i].state == &t_state) {
            g_threads[i] = g_threads[--g_thread_count];
            return;
        }
}

int switch_signal() { return g_switch_signal; }

const Thread_ref* lock_threads(unsigned* count, bool* unlisted) {
    g_lock.lock();
    for (unsigned i = 0; i < g_thread_count;) {
        // Signal 0 checks the thread exists; its state is not read before.
        // (The calling thread does.)
        if (g_threads[i].state != &t_state && os::tgkill(g_threads[i].tid, 0) != 0 && errno == ESRCH)
            g_threads[i] = g_threads[--g_thread_count];
        else
            ++i;
    }
    *count = g_thread_count;
    *unlisted = g_unlisted;
    return g_threads;
}

void unlock_threads() { g_lock.unlock(); }

const uintptr_t* dead_stacks(unsigned* count) {
    *count = g_dead_next < k_dead_stacks ? g_dead_next : k_dead_stacks;
    return g_dead_stacks;
}

Heap* join() {
    if (t_state.no_requests) return nullptr;
    uint64_t g = g_generation.load(std::memory_order_acquire);
    if (!opened(g) || t_state.process_generation == g) return nullptr;
    t_state.process_generation = g;
    shares_of(g).fetch_add(1, std::memory_order_acq_rel);
    Request* r = begin_on_thread(options().request == Request_mode::signal ? "signal" : "process", true);
    if (!r) {
        shares_of(g).fetch_sub(1, std::memory_order_acq_rel);
        return nullptr;
    }
    r->id = __atomic_load_n(&g_id, __ATOMIC_RELAXED);
    // What earlier process-wide reports listed of this thread's blocks (all
    // in its table: traced, or carried).
    {
        Lock_guard guard(g_lock);
        for (size_t i = t_state.reported_seen; i < g_reported.count; ++i)
            if (Block_info* b = r->table.find(g_reported.items[i])) b->flags |= k_block_reported;
        t_state.reported_seen = g_reported.count;
    }
    return r->heap;
}

bool still_in(const Request* r) { return r->generation == g_generation.load(std::memory_order_acquire); }

bool missed_switch() {
    if (!g_switch_signal || t_state.no_requests || t_state.depth > 0 || t_state.tool_heap) return false;
    const uint64_t g = g_generation.load(std::memory_order_acquire);
    if (const Request* r = t_state.request) return r->process_wide && r->generation != g;
    return opened(g) && t_state.process_generation != g && t_state.persistent;
}

void leave() {
    if (t_state.request && t_state.request->process_wide) end_share();
}

void start() {
    const Options& o = options();
    if (bypassed() || o.request == Request_mode::api) return;
    uintptr_t lo, hi;
    if (!backtrace::text_range_of(reinterpret_cast<const void*>(&on_switch), &lo, &hi)) {
        // The linker's bounds instead (this object's headers up to the end
        // of its code: a wider range, never an empty one, which would let a
        // switch end a share in the middle of an inline fast path).
        lo = reinterpret_cast<uintptr_t>(__ehdr_start);
        hi = reinterpret_cast<uintptr_t>(__etext);
    }
    g_own_lo = lo;
    g_own_hi = hi;
    g_switch_signal = SIGRTMAX - 3;
    install(g_switch_signal, on_switch);
    register_thread();
    if (o.request == Request_mode::process) {
        open_request();
        g_generation.store(1, std::memory_order_release);
        t_heap = &g_empty_heap;  // this thread joins at its next allocation
        return;
    }
    // ZMM_REQUEST=signal
    if (!install(o.request_signal.number, on_request_signal)) return;
    pthread_t thread;
    pthread_attr_t attr;
    g_reporter_start = g_generation.load(std::memory_order_acquire);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  // the reporter takes no signals
    pthread_create(&thread, &attr, reporter, nullptr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_attr_destroy(&attr);
}

// At exit. A report another thread is writing (the reporter's, of a request
// that ended just before) is waited for: the exit would cut it off. (For
// at most 10 s: a report never takes that long, and a thread stopped in a
// debugger must not hold the exit for ever.)
void finish() {
    if (bypassed()) return;
    uint64_t g = g_generation.load(std::memory_order_acquire);
    bool unreported;  // a request ended whose report the reporter thread has not begun
    {
        Lock_guard guard(g_lock);
        unreported = !opened(g) && g > g_reported_generation.load(std::memory_order_relaxed);
    }
    if (opened(g) || unreported || open_shares() > 0) close_and_report();
    const uint64_t deadline = os::monotonic_ns() + 10'000'000'000u;
    while (g_writing.load(std::memory_order_acquire) > 0 && os::monotonic_ns() < deadline) {
        timespec pause{0, 1'000'000};
        nanosleep(&pause, nullptr);
    }
}

void before_fork() { g_lock.lock(); }
void after_fork_parent() { g_lock.unlock(); }

void after_fork_child() {
    g_lock.reset();
    // Only the forking thread exists in the child.
    g_thread_count = 0;
    register_thread();
    t_state.switch_pending.store(false, std::memory_order_relaxed);
    // The child reports what it does, not its parent's request: the shares
    // the parent's threads ended are the parent's to report (a child forked
    // between a request's end and its report reported it again, under its
    // own pid), and a report the parent was writing is not the child's to
    // wait for (its exit waited 10 s).
    g_writing.store(0, std::memory_order_relaxed);
    g_leaks = Leak_list{};  // (the parent's copy: the child leaves its pages be)
    g_totals = {};
    const uint64_t g = g_generation.load(std::memory_order_relaxed);
    if (!opened(g)) g_reported_generation.store(g, std::memory_order_relaxed);
    g_open_shares[0].store(0, std::memory_order_relaxed);
    g_open_shares[1].store(0, std::memory_order_relaxed);
    if (const Request* r = t_state.request; r && r->process_wide) shares_of(r->generation).store(1, std::memory_order_relaxed);
}

}  // namespace zmm::process_request
