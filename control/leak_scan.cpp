#include "leak_scan.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "chunk_registry.hpp"
#include "heap_pool.hpp"
#include "os.hpp"
#include "process_request.hpp"
#include "reachability.hpp"
#include "request_internal.hpp"
#include "spin_lock.hpp"
#include "thread_heap.hpp"

namespace zmm::leak_scan {
namespace {

int g_stop_signal = 0;
std::atomic<uint32_t> g_epoch{0};  // odd while a scan holds the other threads
Spin_lock g_scan_lock;             // one scan at a time

long futex(std::atomic<uint32_t>* word, int op, uint32_t value) {
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, nullptr, nullptr, 0);
}

uintptr_t thread_pointer() {
    uintptr_t tp;
    asm volatile("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

void on_stop(int, siginfo_t* info, void*) {
    if (info->si_code != SI_TKILL || info->si_pid != getpid()) return;
    int saved = errno;
    uint32_t e = g_epoch.load(std::memory_order_acquire);
    if (e & 1) {
        // Everything the thread had in registers is in the signal frame,
        // above this frame: reading from here up covers it.
        volatile uintptr_t marker = 0;
        t_state.scan_sp = reinterpret_cast<uintptr_t>(&marker);
        t_state.scan_tp = thread_pointer();
        t_state.scan_ack.store(e, std::memory_order_release);
        while (g_epoch.load(std::memory_order_acquire) == e) futex(&g_epoch, FUTEX_WAIT_PRIVATE, e);
    }
    errno = saved;
}

// ---- address ranges, in memory from the OS ----

struct Range {
    uintptr_t lo, hi;
    bool anonymous;  // a mapping without a file ([heap], [stack], mmap'd memory)
    bool scannable;  // readable, writable, private, not a device
};

struct Ranges {
    Range* items = nullptr;
    size_t count = 0, capacity = 0;
    bool push(const Range& r) {
        if (count == capacity) {
            size_t cap = capacity ? capacity * 2 : 512;
            auto* bigger = static_cast<Range*>(os::map(cap * sizeof(Range)));
            if (!bigger) return false;
            for (size_t i = 0; i < count; ++i) bigger[i] = items[i];
            if (items) os::unmap(items, capacity * sizeof(Range));
            items = bigger;
            capacity = cap;
        }
        items[count++] = r;
        return true;
    }
    void sort() {  // insertion sort: the lists are short and nearly sorted
        for (size_t i = 1; i < count; ++i)
            for (size_t j = i; j > 0 && items[j - 1].lo > items[j].lo; --j) {
                Range t = items[j];
                items[j] = items[j - 1];
                items[j - 1] = t;
            }
    }
    // The range containing a (ranges sorted, disjoint), or nullptr.
    const Range* containing(uintptr_t a) const {
        size_t lo = 0, hi = count;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (items[mid].hi <= a)
                lo = mid + 1;
            else if (items[mid].lo > a)
                hi = mid;
            else
                return &items[mid];
        }
        return nullptr;
    }
    // The index of the first range ending after a.
    size_t first_after(uintptr_t a) const {
        size_t lo = 0, hi = count;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (items[mid].hi <= a)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }
    ~Ranges() {
        if (items) os::unmap(items, capacity * sizeof(Range));
    }
};

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// Every mapping of the process (/proc/self/maps), in address order:
// "lo-hi perms offset dev inode path".
bool read_maps(Ranges& out) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[8192];
    uintptr_t lo = 0, hi = 0, inode = 0;
    char perms[4] = {};
    unsigned field = 0, pos = 0;  // field: 0 lo, 1 hi, 2 perms, 3 offset, 4 dev, 5 inode, 6 path
    bool device = false, ok = true;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) {
            char c = buf[i];
            if (c == '\n') {
                bool scannable = perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p' && !device;
                if (field >= 5 && !out.push(Range{lo, hi, inode == 0, scannable})) ok = false;
                lo = hi = inode = 0;
                field = pos = 0;
                device = false;
                continue;
            }
            if (field == 0) {
                if (c == '-')
                    field = 1;
                else if (int d = hex_digit(c); d >= 0)
                    lo = lo << 4 | static_cast<uintptr_t>(d);
            } else if (field == 1) {
                if (c == ' ')
                    field = 2, pos = 0;
                else if (int d = hex_digit(c); d >= 0)
                    hi = hi << 4 | static_cast<uintptr_t>(d);
            } else if (field <= 4) {
                if (c == ' ')
                    ++field, pos = 0;
                else if (field == 2 && pos < 4)
                    perms[pos++] = c;
            } else if (field == 5) {
                if (c == ' ')
                    field = 6, pos = 0;
                else if (c >= '0' && c <= '9')
                    inode = inode * 10 + static_cast<uintptr_t>(c - '0');
            } else {
                // The path: "/dev/..." is a device; reading it may act on it.
                if (c == ' ' && pos == 0) continue;
                static const char dev[] = "/dev/";
                if (pos < 5 && c != dev[pos]) pos = 100;
                else if (pos < 5 && ++pos == 5) device = true;
            }
        }
    }
    close(fd);
    return ok;
}

int own_marker;  // an address in zmm's own writable data

struct Modules {
    Ranges writable;  // every module's writable segments, zmm's included
    Ranges own;       // zmm's: never read (the registry alone is 64 MiB)
};

int collect_module(dl_phdr_info* info, size_t, void* data) {
    auto* m = static_cast<Modules*>(data);
    uintptr_t own = reinterpret_cast<uintptr_t>(&own_marker);
    bool is_own = false;
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && own >= lo && own < lo + ph.p_memsz) is_own = true;
    }
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_W)) continue;
        uintptr_t lo = (info->dlpi_addr + ph.p_vaddr) & ~uintptr_t{4095};
        uintptr_t hi = (info->dlpi_addr + ph.p_vaddr + ph.p_memsz + 4095) & ~uintptr_t{4095};
        (is_own ? m->own : m->writable).push(Range{lo, hi, false, true});
    }
    return 0;
}

void add_internal(void* ctx, uintptr_t lo, uintptr_t hi) {
    static_cast<Ranges*>(ctx)->push(Range{lo, hi, true, false});
}

// Reads every root that is not a thread's live stack: each scannable
// mapping, less what is not the program's (zmm's data and tables, the heap's
// chunks and huge blocks, which scan_heap reads by their metadata, and the
// stacks, read from their stack pointers). File mappings are read only where
// they are a module's data (a private mapping of a file truncated since
// would fault); anonymous ones only where pages are resident (untouched
// pages are zero: a reservation of terabytes costs nothing).
// A root range read through the kernel (process_vm_readv): for when a
// thread that did not stop may unmap memory meanwhile (a missing page then
// reads as nothing, not as a fault in zmm).
void read_copied(Reachability& reach, uintptr_t lo, uintptr_t hi) {
    static uintptr_t buf[8192];  // 64 KiB; one scan at a time (g_scan_lock)
    pid_t self = getpid();
    while (lo < hi) {
        size_t n = hi - lo < sizeof buf ? hi - lo : sizeof buf;
        iovec local{buf, n}, remote{reinterpret_cast<void*>(lo), n};
        ssize_t got = process_vm_readv(self, &local, 1, &remote, 1, 0);
        if (got > 0) reach.scan_root(buf, reinterpret_cast<char*>(buf) + got);
        // A page that went away: skip it.
        lo += got > 0 ? static_cast<size_t>(got) : (4096 - (lo & 4095));
    }
}

struct Root_scan {
    Reachability& reach;
    const Modules& modules;
    const Ranges& skip;  // sorted: internal mappings, zmm's data, live stacks
    bool copied;         // read through the kernel (threads did not stop)

    void mapping(const Range& m) {
        if (!m.scannable) return;
        if (m.anonymous) {
            pieces(m.lo, m.hi, true);
            return;
        }
        for (size_t i = 0; i < modules.writable.count; ++i) {
            const Range& w = modules.writable.items[i];
            uintptr_t lo = w.lo > m.lo ? w.lo : m.lo, hi = w.hi < m.hi ? w.hi : m.hi;
            if (lo < hi) pieces(lo, hi, false);
        }
    }

    // [lo, hi) less the heap's granules and the skipped ranges.
    void pieces(uintptr_t lo, uintptr_t hi, bool resident_only) {
        while (lo < hi) {
            uintptr_t granule_end = (lo | (k_chunk_size - 1)) + 1;
            uintptr_t end = granule_end < hi ? granule_end : hi;
            Granule g = granule_of(reinterpret_cast<void*>(lo));
            if (g == granule_none || g == granule_huge_freed) {
                uintptr_t a = lo;
                for (size_t i = skip.first_after(a); a < end && i < skip.count; ++i) {
                    const Range& s = skip.items[i];
                    if (s.lo >= end) break;
                    if (s.lo > a) read(a, s.lo, resident_only);
                    if (s.hi > a) a = s.hi;
                }
                if (a < end) read(a, end, resident_only);
            }
            lo = end;
        }
    }

    void read(uintptr_t lo, uintptr_t hi, bool resident_only) {
        if (copied) {
            read_copied(reach, lo, hi);
            return;
        }
        if (!resident_only) {
            reach.scan_root(reinterpret_cast<void*>(lo), reinterpret_cast<void*>(hi));
            return;
        }
        unsigned char vec[1024];
        while (lo < hi) {
            uintptr_t span = hi - lo < sizeof vec * 4096 ? hi - lo : sizeof vec * 4096;
            if (mincore(reinterpret_cast<void*>(lo), span, vec) != 0) {
                reach.scan_root(reinterpret_cast<void*>(lo), reinterpret_cast<void*>(lo + span));
            } else {
                size_t pages = (span + 4095) / 4096;
                for (size_t p = 0; p < pages;) {
                    if (!(vec[p] & 1)) {
                        ++p;
                        continue;
                    }
                    size_t q = p;
                    while (q < pages && (vec[q] & 1)) ++q;
                    uintptr_t a = lo + p * 4096, b = lo + q * 4096 < hi ? lo + q * 4096 : hi;
                    reach.scan_root(reinterpret_cast<void*>(a), reinterpret_cast<void*>(b));
                    p = q;
                }
            }
            lo += span;
        }
    }
};

}  // namespace

int stop_signal() { return g_stop_signal; }

void start() {
    g_stop_signal = SIGRTMAX - 4;
    struct sigaction sa{};
    sa.sa_sigaction = on_stop;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(g_stop_signal, &sa, nullptr);
}

__attribute__((noinline)) Result classify(Leak* leaks, size_t count) {
    Result res{};
    if (!count) return res;
    Lock_guard one_scan(g_scan_lock);
    uint64_t t0 = now_ns();
    Reachability reach;
    if (!reach.prepare(leaks, count)) {
        for (size_t i = 0; i < count; ++i) leaks[i].kind = Leak_kind::live;
        return res;
    }
    // Before the others stop: dl_iterate_phdr takes the loader's lock, which
    // a stopped thread might hold.
    Modules modules;
    dl_iterate_phdr(collect_module, &modules);

    // The calling thread's callee-saved registers, onto its stack.
    __builtin_unwind_init();
    volatile uintptr_t here = 0;
    uintptr_t own_sp = t_state.scan_from ? reinterpret_cast<uintptr_t>(t_state.scan_from)
                                         : reinterpret_cast<uintptr_t>(&here);

    unsigned n = 0;
    const process_request::Thread_ref* threads = process_request::lock_threads(&n);
    if (n > 4096) n = 4096;
    // The heap's mappings stay while they are read, even if a thread does
    // not stop (after the thread list's lock: a thread that unmaps while it
    // holds that lock finishes first).
    os::hold_heap_mappings();
    uint32_t epoch = g_epoch.load(std::memory_order_relaxed) + 1;
    if (!(epoch & 1)) ++epoch;
    g_epoch.store(epoch, std::memory_order_release);
    bool sent[4096] = {};
    for (unsigned i = 0; i < n; ++i) {
        if (threads[i].state == &t_state || g_stop_signal == 0) continue;
        sent[i] = syscall(SYS_tgkill, getpid(), threads[i].tid, g_stop_signal) == 0;
    }
    // Up to a second for every thread; 10 ms for one that did not stop for
    // the last scan (its signal was blocked then, it likely is now).
    uint64_t start = now_ns();
    for (;;) {
        bool all = true;
        uint64_t waited = now_ns() - start;
        for (unsigned i = 0; i < n; ++i) {
            Thread_state* s = threads[i].state;
            if (!sent[i] || s->scan_ack.load(std::memory_order_acquire) == epoch) continue;
            if (waited < (s->scan_missed ? 10'000'000u : 1'000'000'000u)) all = false;
        }
        if (all) break;
        timespec pause{0, 20'000};
        nanosleep(&pause, nullptr);
    }
    bool missed = false;
    for (unsigned i = 0; i < n; ++i) {
        Thread_state* s = threads[i].state;
        if (!sent[i]) continue;
        s->scan_missed = s->scan_ack.load(std::memory_order_acquire) != epoch;
        missed |= s->scan_missed;
    }

    // The world is still: what is mapped now stays mapped until the end.
    Ranges maps, skip;
    read_maps(maps);
    os::for_each_internal(add_internal, &skip);
    for (size_t i = 0; i < modules.own.count; ++i) skip.push(modules.own.items[i]);
    // Live stacks are read from their stack pointers, not as mappings.
    auto skip_stack_of = [&](uintptr_t a) {
        if (const Range* r = maps.containing(a)) skip.push(*r);
    };
    skip_stack_of(own_sp);
    for (unsigned i = 0; i < n; ++i)
        if (threads[i].state != &t_state && threads[i].state->stack_hint) skip_stack_of(threads[i].state->stack_hint);
    // Stacks of exited threads, kept by glibc for reuse: dead frames only
    // (a live thread reusing one is listed above and read from its sp).
    unsigned dead_count = 0;
    const uintptr_t* dead = process_request::dead_stacks(&dead_count);
    for (unsigned i = 0; i < dead_count; ++i) skip_stack_of(dead[i]);
    skip.sort();

    auto stack = [&](uintptr_t sp) {
        if (const Range* r = maps.containing(sp))
            reach.scan_root(reinterpret_cast<void*>(sp), reinterpret_cast<void*>(r->hi));
    };
    stack(own_sp);
    for (unsigned i = 0; i < n; ++i) {
        Thread_state* s = threads[i].state;
        if (s == &t_state) continue;
        if (sent[i] && s->scan_ack.load(std::memory_order_acquire) == epoch) {
            ++res.threads;
            stack(s->scan_sp);
        } else {
            // Not stopped: its whole stack, as it is now, through the kernel.
            ++res.threads_missed;
            if (const Range* r = maps.containing(s->stack_hint)) read_copied(reach, r->lo, r->hi);
        }
    }
    Root_scan roots{reach, modules, skip, missed};
    for (size_t i = 0; i < maps.count; ++i) roots.mapping(maps.items[i]);
    for (Heap* h = heap_pool::all_heaps(); h; h = h->all_next)
        if (!h->internal) reach.scan_heap(*h);  // the tool heap holds zmm's, not the program's
    reach.classify();

    g_epoch.store(epoch + 1, std::memory_order_release);
    futex(&g_epoch, FUTEX_WAKE_PRIVATE, INT_MAX);
    os::release_heap_mappings();
    process_request::unlock_threads();
    (void)here;
    res.ran = true;
    res.bytes = reach.bytes_scanned();
    res.ns = now_ns() - t0;
    return res;
}

}  // namespace zmm::leak_scan
