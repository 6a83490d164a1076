#include "leak_scan.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <fcntl.h>
#include <sched.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "diag.hpp"
#include "heap.hpp"
#include "heap_pool.hpp"
#include "memory_map.hpp"
#include "os.hpp"
#include "process_request.hpp"
#include "reachability.hpp"
#include "request_internal.hpp"
#include "spin_lock.hpp"
#include "reentry.hpp"
#include "thread_heap.hpp"

namespace zmm::leak_scan {

using memory_map::Modules;
using memory_map::Range;
using memory_map::Ranges;

namespace {

int own_marker;  // an address in zmm's own writable data

int g_stop_signal = 0;
std::atomic<uint32_t> g_epoch{0};  // odd while a scan holds the other threads
Spin_lock g_scan_lock;             // one scan at a time
std::atomic<bool> g_fork_pending{false};  // a fork waits for the scan lock

// Stops the calling thread until the scan of epoch e is over. Everything
// the thread had in registers is above this frame (in the signal frame, or
// spilled by the caller): reading from here up covers it.
__attribute__((noinline)) void park(uint32_t e) {
    __builtin_unwind_init();
    volatile uintptr_t marker = 0;
    t_state.scan_sp = reinterpret_cast<uintptr_t>(&marker);
    t_state.scan_ack.store(e, std::memory_order_release);
    while (g_epoch.load(std::memory_order_acquire) == e) os::futex_wait(g_epoch, e);
}

void on_stop(int, siginfo_t* info, void*) {
    if (info->si_code != SI_TKILL || info->si_pid != os::process_id()) return;
    int saved = errno;
    uint32_t e = g_epoch.load(std::memory_order_acquire);
    if (e & 1) {
        // Inside an allocator slow path the thread's heap lists are
        // mid-update: it stops when it leaves (Busy_section).
        if (t_state.busy > 0)
            t_state.stop_pending = true;
        else
            park(e);
    }
    errno = saved;
}

// A thread waiting in an unmap for the scan to end stops meanwhile.
void stop_while_waiting() {
    if (t_state.stop_pending) stop_if_pending();
}

// /proc/self/maps for a scan. Where the kernel answers PROCMAP_QUERY, zmm
// keeps it open from one scan to the next (opening it walks /proc: 10-16 µs
// a scan; the one descriptor zmm keeps, and only once a scan has run:
// reports still open their file each time), moved out of the way of the
// program's small numbers (os::move_out_of_the_way). A kept descriptor is only ever queried: never
// read (its offset is not moved) and never closed but in a forked child's
// fork handler (the parent's describes the parent), before any of the
// program's code has run there (the fork waited for g_scan_lock: it is
// still zmm's). Checked before each use: this process's, still the file zmm
// kept (a program that closes every descriptor may have one of its own
// there since: forgotten, left alone). Where the file is read instead, it
// is opened for each scan and closed after.
struct Maps_file {
    os::Kept_fd kept;
    bool query = true;  // false: this kernel has no PROCMAP_QUERY
};
Maps_file g_maps;  // under g_scan_lock

struct Maps_use {
    int fd = -1;
    bool fresh = false;  // opened for this scan: closed after it, unless kept
};

Maps_use open_maps() {
    if (g_maps.kept.is_ours()) return Maps_use{g_maps.kept.fd, false};
    g_maps.kept.forget();
    return Maps_use{open("/proc/self/maps", O_RDONLY | O_CLOEXEC), true};
}

// The fresh descriptor of a scan whose query worked, moved out of the way
// and kept. (Not kept where no number past 2 is free.)
void keep(Maps_use& use) {
    use.fd = os::move_out_of_the_way(use.fd);
    if (use.fd <= 2 || !g_maps.kept.keep(use.fd)) return;
    use.fresh = false;
}

// The mappings, asked of the kernel, or read from the file.
bool read_mappings(Maps_use& use, Ranges& maps) {
    if (g_maps.query) {
        switch (memory_map::query_writable(use.fd, maps)) {
            case memory_map::Query::done:
                if (use.fresh) keep(use);
                return true;
            case memory_map::Query::failed: return false;
            case memory_map::Query::unsupported:
                // A kept descriptor that no longer answers: forgotten (the
                // next scan opens its own), never read.
                if (!use.fresh) {
                    g_maps.kept.forget();
                    return false;
                }
                g_maps.query = false;
                break;
        }
    }
    return memory_map::read_maps(use.fd, maps);
}

void done_with_maps(const Maps_use& use) {
    if (use.fresh && use.fd >= 0) close(use.fd);
}

// [lo, hi) is not read as a root (ctx: the skipped Ranges).
void add_skipped(void* ctx, uintptr_t lo, uintptr_t hi) {
    static_cast<Ranges*>(ctx)->push(Range{lo, hi, true, false, true, true});
}

// A root range read through the kernel (process_vm_readv): for when a
// thread that did not stop may unmap memory meanwhile (a missing page then
// reads as nothing, not as a fault in zmm).
void read_copied(Reachability& reach, uintptr_t lo, uintptr_t hi) {
    static uintptr_t buf[8192];  // 64 KiB; one scan at a time (g_scan_lock)
    pid_t self = os::process_id();
    while (lo < hi) {
        size_t n = hi - lo < sizeof buf ? hi - lo : sizeof buf;
        iovec local{buf, n}, remote{reinterpret_cast<void*>(lo), n};
        ssize_t got = process_vm_readv(self, &local, 1, &remote, 1, 0);
        if (got < 0 && (errno == ENOSYS || errno == EPERM)) {
            // Forbidden here (seccomp): read it as it is, as LeakSanitizer
            // would, rather than leave roots out (false leaks).
            reach.scan_root(reinterpret_cast<void*>(lo), reinterpret_cast<void*>(hi));
            return;
        }
        if (got > 0) reach.scan_root(buf, reinterpret_cast<char*>(buf) + got);
        // A page that went away: skip it.
        lo += got > 0 ? static_cast<size_t>(got) : (4096 - (lo & 4095));
    }
}

// Reads every root that is not a thread's live stack: each scannable
// mapping, less what is not the program's (zmm's data and tables, the heap's
// chunks and huge blocks, which scan_heap reads by their metadata, and the
// stacks, read from their stack pointers). File mappings are read only where
// they are a module's data (a private mapping of a file truncated since
// would fault); anonymous ones only where pages are resident (untouched
// pages are zero: a reservation of terabytes costs nothing).
struct Root_scan {
    Reachability& reach;
    const Modules& modules;
    const Ranges& skip;  // sorted, disjoint: internal mappings, zmm's data, stacks
    bool copied;         // read through the kernel (threads run on)

    void mapping(const Range& m) {
        if (!m.scannable) return;
        if (m.anonymous) {
            pieces(m.lo, m.hi, reach.resident_only());  // anonymous memory: resident pages only (no swap)
            return;
        }
        for (size_t i = 0; i < modules.writable.count; ++i) {
            const Range& w = modules.writable.items[i];
            uintptr_t lo = w.lo > m.lo ? w.lo : m.lo, hi = w.hi < m.hi ? w.hi : m.hi;
            if (lo < hi) pieces(lo, hi, false);
        }
    }

    // [lo, hi) less the heaps' memory and the skipped ranges, granule by
    // granule: what follows a huge block's mapping in its last granule is
    // read (Heap::heap_memory_end).
    void pieces(uintptr_t lo, uintptr_t hi, bool resident) {
        while (lo < hi) {
            uintptr_t granule_end = (lo | (k_chunk_size - 1)) + 1;
            uintptr_t end = granule_end < hi ? granule_end : hi;
            uintptr_t a = Heap::heap_memory_end(reinterpret_cast<void*>(lo));
            for (size_t i = skip.first_after(a); a < end && i < skip.count; ++i) {
                const Range& s = skip.items[i];
                if (s.lo >= end) break;
                if (s.lo > a) read(a, s.lo, resident);
                if (s.hi > a) a = s.hi;
            }
            if (a < end) read(a, end, resident);
            lo = end;
        }
    }

    void read(uintptr_t lo, uintptr_t hi, bool resident) {
        if (copied)
            read_copied(reach, lo, hi);
        else if (resident)
            reach.scan_root_resident(reinterpret_cast<void*>(lo), reinterpret_cast<void*>(hi));
        else
            reach.scan_root(reinterpret_cast<void*>(lo), reinterpret_cast<void*>(hi));
    }
};

}  // namespace

int stop_signal() { return g_stop_signal; }

void stop_if_pending() {
    t_state.stop_pending = false;
    uint32_t e = g_epoch.load(std::memory_order_acquire);
    if (e & 1) park(e);
}

// A fork waits for the scan under way; scans that would start meanwhile wait
// for the fork (else a thread that scans in a loop starves the forking one,
// which every scan stops).
void before_fork() {
    g_fork_pending.store(true, std::memory_order_seq_cst);
    g_scan_lock.lock();
}
void after_fork_parent() {
    g_scan_lock.unlock();
    g_fork_pending.store(false, std::memory_order_release);
}

void after_fork_child() {
    g_maps.kept.close_and_forget();
    g_fork_pending.store(false, std::memory_order_relaxed);
    g_scan_lock.reset();
    uint32_t e = g_epoch.load(std::memory_order_relaxed);
    if (e & 1) g_epoch.store(e + 1, std::memory_order_relaxed);
    t_state.stop_pending = false;
}

void start() {
    g_stop_signal = SIGRTMAX - 4;
    Own_sigaction own;  // not wrapped as the program's
    struct sigaction old{};
    if (sigaction(g_stop_signal, nullptr, &old) == 0 && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
        warn("the program handles SIGRTMAX-4, which zmm's leak scan uses to stop threads; zmm takes it over");
    os::set_unmap_wait_hook(stop_while_waiting);
    struct sigaction sa{};
    sa.sa_sigaction = on_stop;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(g_stop_signal, &sa, nullptr);
}

namespace {

// Every kind left `live`: the scan could not run (no memory for its tables,
// /proc/self/maps unreadable, zmm's tables past their size); the report
// then lists every live block, as ZMM_LEAKS=all would.
Scan_info unscanned(Leak* leaks, size_t count) {
    for (size_t i = 0; i < count; ++i) leaks[i].kind = Leak_kind::live;
    Scan_info r{};
    r.failed = true;
    return r;
}

// The signalled threads: stopped (acknowledged this epoch) or not.
bool stopped(const Thread_state* s, uint32_t epoch) {
    return s->scan_ack.load(std::memory_order_acquire) == epoch;
}

// Is the mapping `r` (one of maps) a thread stack glibc keeps: an
// anonymous mapping with an inaccessible guard page right below it? (An
// address in an exited thread's stack may since belong to anything.)
bool looks_like_cached_stack(int maps_fd, const Ranges& maps, const Range* r) {
    return r->anonymous && memory_map::guarded_below(maps_fd, maps, *r);
}

}  // namespace

__attribute__((noinline)) Scan_info classify(Leak* leaks, size_t count, Own_heap* own) {
    if (!count) return Scan_info{};
    os::Errno_keeper keep_errno;  // (the kernel's answers set it)
    while (g_fork_pending.load(std::memory_order_acquire)) sched_yield();
    Lock_guard one_scan(g_scan_lock);
    uint64_t t0 = os::monotonic_ns();
    Scan_info res{};
    // Before the others stop: dl_iterate_phdr takes the loader's lock, which
    // a stopped thread might hold, and the descriptor for /proc/self/maps is
    // taken now (none left: no scan).
    Modules modules;
    const bool modules_read = memory_map::collect_modules(modules, &own_marker);
    Maps_use maps_file = open_maps();
    if (!modules_read || maps_file.fd < 0 || os::internal_overflowed()) {
        done_with_maps(maps_file);
        return unscanned(leaks, count);
    }

    // The calling thread's callee-saved registers, onto its stack.
    __builtin_unwind_init();
    volatile uintptr_t here = 0;
    uintptr_t own_sp = t_state.scan_from ? reinterpret_cast<uintptr_t>(t_state.scan_from)
                                         : reinterpret_cast<uintptr_t>(&here);

    // No handler of the program's runs on this thread until the scan is
    // done: one that allocates would wait for the reentry heap's lock,
    // whose holder (another thread's handler) may itself wait for the scan
    // to open the unmap gate (an unmap of the reentry heap's). That holder
    // then waits for this scan's end, a second at most.
    os::Signals_blocked quiet;
    unsigned n = 0;
    bool unlisted = false;  // threads the list could not hold: never stopped
    const process_request::Thread_ref* threads = process_request::lock_threads(&n, &unlisted);
    // The heap's mappings stay while they are read, even if a thread does
    // not stop (after the thread list's lock: a thread that unmaps while it
    // holds that lock finishes first).
    os::hold_heap_mappings();
    uint32_t epoch = g_epoch.load(std::memory_order_relaxed) + 1;
    if (!(epoch & 1)) ++epoch;
    g_epoch.store(epoch, std::memory_order_release);
    static bool signalled[process_request::k_max_threads];  // one scan at a time (g_scan_lock)
    for (unsigned i = 0; i < n; ++i) {
        Thread_state* s = threads[i].state;
        signalled[i] = false;
        if (s == &t_state || g_stop_signal == 0) continue;
        // One that missed the last scan still has that signal queued (it
        // blocks it): no second one, the queue of real-time signals is
        // limited per user.
        if (s->scan_missed)
            signalled[i] = true;
        else
            signalled[i] = os::tgkill(threads[i].tid, g_stop_signal) == 0;
    }
    // Up to a second for every thread; 10 ms for one that did not stop for
    // the last scan (its signal was blocked then, it likely is now).
    uint64_t start = os::monotonic_ns();
    for (;;) {
        bool all = true;
        uint64_t waited = os::monotonic_ns() - start;
        for (unsigned i = 0; i < n; ++i) {
            Thread_state* s = threads[i].state;
            if (!signalled[i] || stopped(s, epoch)) continue;
            if (waited < (s->scan_missed ? 10'000'000u : 1'000'000'000u)) all = false;
        }
        if (all) break;
        timespec pause{0, 20'000};
        nanosleep(&pause, nullptr);
    }
    // Any thread that runs on (not stopped, or never listed) may unmap the
    // program's memory meanwhile: the roots are then read through the kernel.
    bool running = unlisted;
    for (unsigned i = 0; i < n; ++i) {
        Thread_state* s = threads[i].state;
        if (s == &t_state) continue;
        s->scan_missed = !stopped(s, epoch);
        running |= s->scan_missed;
    }

    // What is mapped now stays mapped until the end (the heap's mappings
    // are held; nobody else runs, or the roots are copied).
    Ranges maps, skip;
    bool ok = read_mappings(maps_file, maps);
    const int maps_fd = maps_file.fd;
    os::for_each_internal(add_skipped, &skip);
    for (size_t i = 0; i < modules.own.count; ++i) skip.push(modules.own.items[i]);
    // Huge mappings the heaps keep whose contents are stale (cached, slack).
    for (Heap* h = heap_pool::all_heaps(); h; h = h->all_next) h->for_each_stale_huge_range(add_skipped, &skip);
    // Live stacks are read from their stack pointers, not as mappings.
    auto skip_stack_of = [&](uintptr_t a) {
        if (const Range* r = maps.containing(a)) skip.push(*r);
    };
    skip_stack_of(own_sp);
    for (unsigned i = 0; i < n; ++i) {
        Thread_state* s = threads[i].state;
        if (s == &t_state) continue;
        if (s->stack_hint) skip_stack_of(s->stack_hint);
        if (stopped(s, epoch)) skip_stack_of(s->scan_sp);
    }
    // Stacks of exited threads, kept by glibc for reuse: dead frames only
    // (a live thread reusing one is listed above and read from its sp).
    unsigned dead_count = 0;
    const uintptr_t* dead = process_request::dead_stacks(&dead_count);
    for (unsigned i = 0; i < dead_count; ++i)
        if (const Range* r = maps.containing(dead[i]); r && looks_like_cached_stack(maps_fd, maps, r)) skip.push(*r);
    skip.sort_and_merge();

    // The candidates, checked now that they cannot change: a block freed
    // since its request ended is `gone`.
    Reachability reach;
    ok = ok && reach.prepare(leaks, count);
    // Without swap, a page mincore() calls absent was never written (reads as
    // zero): skipping those makes a reservation of terabytes cost nothing.
    // With swap it may be swapped out: every page is read.
    reach.set_resident_only(os::no_swap());
    // A stack inside a heap block (a fiber's) is read with the heap: then
    // no heap is left out, lost blocks included.
    auto in_heap = [](uintptr_t sp) { return Heap::heap_memory_end(reinterpret_cast<void*>(sp)) > sp; };
    bool heap_stacks = in_heap(own_sp);
    for (unsigned i = 0; i < n; ++i)
        if (threads[i].state != &t_state && stopped(threads[i].state, epoch))
            heap_stacks |= in_heap(threads[i].state->scan_sp);
    if (own && !heap_stacks) reach.leave_out_lost(own->heap, own->covered);
    if (ok) {
        Root_scan roots{reach, modules, skip, running};
        auto stack = [&](uintptr_t sp) {
            const Range* r = maps.containing(sp);
            if (!r || in_heap(sp)) return;  // a fiber stack in a block: read with the heap
            roots.read(sp, r->hi, false);
        };
        stack(own_sp);
        for (unsigned i = 0; i < n; ++i) {
            Thread_state* s = threads[i].state;
            if (s == &t_state) continue;
            const Range* home = maps.containing(s->stack_hint);
            if (stopped(s, epoch)) {
                ++res.threads;
                stack(s->scan_sp);
                // Running elsewhere (a coroutine, an alternate signal stack):
                // its own stack's frames are live too, all of them.
                if (home && home != maps.containing(s->scan_sp)) read_copied(reach, home->lo, home->hi);
            } else {
                // Not stopped: its whole stack, as it is now, through the kernel.
                ++res.threads_missed;
                if (home) read_copied(reach, home->lo, home->hi);
            }
        }
        for (size_t i = 0; i < maps.count; ++i) roots.mapping(maps.items[i]);
        for (Heap* h = heap_pool::all_heaps(); h; h = h->all_next)
            if (!h->internal) reach.scan_heap(*h);  // the tool heap holds zmm's, not the program's
        reach.classify();
        if (own) own->found_again = reach.found_again();
    }

    done_with_maps(maps_file);
    g_epoch.store(epoch + 1, std::memory_order_release);
    // Only a thread sent the stop signal (this scan or one it missed) parks.
    bool any_signalled = false;
    for (unsigned i = 0; i < n; ++i) any_signalled |= signalled[i];
    if (any_signalled) os::futex_wake(g_epoch, INT_MAX);
    os::release_heap_mappings();
    process_request::unlock_threads();
    (void)here;
    if (!ok) return unscanned(leaks, count);
    res.ran = true;
    res.bytes = reach.bytes_scanned();
    res.ns = os::monotonic_ns() - t0;
    return res;
}

}  // namespace zmm::leak_scan
