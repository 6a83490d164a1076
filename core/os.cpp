#include "os.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "gate.hpp"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace zmm::os {
namespace {
constexpr size_t k_page = 4096;
size_t round_page(size_t n) { return (n + k_page - 1) & ~(k_page - 1); }

// The internal mappings: a slot is claimed by a compare-exchange on `lo`
// (1 while its `hi` is being written), freed by storing 0.
struct Internal {
    std::atomic<uintptr_t> lo;
    std::atomic<uintptr_t> hi;
};
constexpr size_t k_internal_slots = 4096;
Internal g_internal[k_internal_slots];
// Every slot ever claimed is below this: the walks stop there, not at 4096
// (a leak scan walks them all, and a map or unmap of its arrays looks
// its slot up).
std::atomic<size_t> g_internal_used{0};

size_t internal_used() { return g_internal_used.load(std::memory_order_acquire); }
// Internal mappings the table had no slot for, still mapped: the scan
// cannot tell them from the program's while there are any.
std::atomic<size_t> g_untracked{0};

void track(void* p, size_t size) {
    uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    for (size_t i = 0; i < k_internal_slots; ++i) {
        uintptr_t expected = 0;
        if (g_internal[i].lo.load(std::memory_order_relaxed) == 0 &&
            g_internal[i].lo.compare_exchange_strong(expected, 1, std::memory_order_acquire)) {
            size_t used = g_internal_used.load(std::memory_order_relaxed);
            while (used <= i && !g_internal_used.compare_exchange_weak(used, i + 1, std::memory_order_release,
                                                                       std::memory_order_relaxed)) {
            }
            g_internal[i].hi.store(lo + size, std::memory_order_relaxed);
            g_internal[i].lo.store(lo, std::memory_order_release);
            return;
        }
    }
    // Full: the mapping is not listed (the scan would read it as a root).
    g_untracked.fetch_add(1, std::memory_order_relaxed);
}

void untrack(void* p) {
    uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    for (size_t i = 0, used = internal_used(); i < used; ++i)
        if (g_internal[i].lo.load(std::memory_order_acquire) == lo) {
            g_internal[i].lo.store(0, std::memory_order_release);
            return;
        }
    // One that had no slot (never below zero: a caller's mistake must not
    // turn the scan off).
    size_t n = g_untracked.load(std::memory_order_relaxed);
    while (n && !g_untracked.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
    }
}

// The tracked length of the internal mapping that starts at p; 0 if none.
size_t tracked_size(void* p) {
    uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    for (size_t i = 0, used = internal_used(); i < used; ++i)
        if (g_internal[i].lo.load(std::memory_order_acquire) == lo) return g_internal[i].hi.load(std::memory_order_relaxed) - lo;
    return 0;
}

// Internal mappings given back, kept mapped (and listed) for the next map()
// of about their size: a leak scan maps and unmaps the same handful of
// arrays at every request's end (bench_requests 1000: 57.6k page faults,
// 4.7k with them kept). A slot holds the address with the page count in
// its low bits; 0 is empty. When all are taken, the one kept longest ago
// makes room (sizes creep as a program's carried blocks grow: the old ones
// would otherwise stay for good). Lock-free: map() runs in signal handlers.
constexpr size_t k_kept_slots = 8;
constexpr size_t k_kept_max_pages = 256;  // 1 MiB each at most: 8 MiB kept at most
static_assert(k_kept_max_pages < k_page);
std::atomic<uintptr_t> g_kept[k_kept_slots];
std::atomic<uint32_t> g_kept_when[k_kept_slots];
std::atomic<uint32_t> g_kept_clock{0};

// Unlists and unmaps the internal mapping p of `bytes`.
void unmap_listed(void* p, size_t bytes) {
    untrack(p);
    int saved = errno;  // internal memory: the scan never reads it, no guard
    munmap(p, bytes);
    errno = saved;
}

// A kept mapping of `pages` to 2 * `pages` pages, zeroed over `pages` if
// `zeroed`; nullptr if none.
void* take_kept(size_t pages, bool zeroed) {
    if (pages > k_kept_max_pages) return nullptr;
    for (auto& slot : g_kept) {
        uintptr_t v = slot.load(std::memory_order_relaxed);
        size_t n = v & (k_page - 1);
        if (v == 0 || n < pages || n > 2 * pages) continue;
        if (!slot.compare_exchange_strong(v, 0, std::memory_order_acquire)) continue;
        void* p = reinterpret_cast<void*>(v & ~(k_page - 1));
        if (zeroed) memset(p, 0, pages * k_page);
        return p;
    }
    return nullptr;
}

// Keeps the listed mapping p of `bytes` (in an empty slot, or in place of
// the one kept longest ago); false if it cannot.
bool keep(void* p, size_t bytes) {
    size_t pages = bytes / k_page;
    if (pages == 0 || pages > k_kept_max_pages) return false;
    const uintptr_t mine = reinterpret_cast<uintptr_t>(p) | pages;
    const uint32_t now = g_kept_clock.fetch_add(1, std::memory_order_relaxed) + 1;
    size_t oldest = k_kept_slots;
    uint32_t oldest_age = 0;
    for (size_t i = 0; i < k_kept_slots; ++i) {
        uintptr_t expected = 0;
        if (g_kept[i].load(std::memory_order_relaxed) == 0 &&
            g_kept[i].compare_exchange_strong(expected, mine, std::memory_order_release)) {
            g_kept_when[i].store(now, std::memory_order_relaxed);
            return true;
        }
        uint32_t age = now - g_kept_when[i].load(std::memory_order_relaxed);
        if (age >= oldest_age) {
            oldest_age = age;
            oldest = i;
        }
    }
    if (oldest == k_kept_slots) return false;
    uintptr_t old = g_kept[oldest].load(std::memory_order_relaxed);
    if (old == 0 || !g_kept[oldest].compare_exchange_strong(old, mine, std::memory_order_acq_rel)) return false;
    g_kept_when[oldest].store(now, std::memory_order_relaxed);
    unmap_listed(reinterpret_cast<void*>(old & ~(k_page - 1)), (old & (k_page - 1)) * k_page);
    return true;
}

}  // namespace

// The unmap guard (hold_heap_mappings).
namespace {
Gate g_unmaps;  // closed while the heap's mappings are held
std::atomic<void (*)()> g_wait_hook{nullptr};

struct Unmap_guard {
    Unmap_guard() : shard(g_unmaps.enter(g_wait_hook.load(std::memory_order_relaxed))) {}
    ~Unmap_guard() { g_unmaps.leave(shard); }
    Unmap_guard(const Unmap_guard&) = delete;
    Unmap_guard& operator=(const Unmap_guard&) = delete;
    unsigned shard;
};

}  // namespace

void hold_heap_mappings() { g_unmaps.close(); }

void set_unmap_wait_hook(void (*hook)()) { g_wait_hook.store(hook, std::memory_order_relaxed); }

void release_heap_mappings() { g_unmaps.open(); }

bool heap_mappings_held() { return g_unmaps.is_closed(); }

void reset_heap_mappings_hold() { g_unmaps.reset(); }

void* map_heap(size_t size) {
    void* p = mmap(nullptr, round_page(size), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

void unmap_heap(void* p, size_t size) {
    Unmap_guard guard;
    int saved = errno;
    munmap(p, round_page(size));
    errno = saved;
}

namespace {
void* map_internal(size_t size, bool zeroed) {
    if (void* kept = take_kept(round_page(size) / k_page, zeroed)) return kept;
    void* p = map_heap(size);
    if (p) track(p, round_page(size));
    return p;
}
}  // namespace

void* map(size_t size) { return map_internal(size, true); }
void* map_unzeroed(size_t size) { return map_internal(size, false); }

void unmap(void* p, size_t size) {
    // Its own length, which may be more than `size` (a kept mapping reused).
    size_t bytes = tracked_size(p);
    if (bytes && keep(p, bytes)) return;
    unmap_listed(p, bytes ? bytes : round_page(size));
}

bool internal_overflowed() { return g_untracked.load(std::memory_order_relaxed) != 0; }

void for_each_internal(void (*fn)(void* ctx, uintptr_t lo, uintptr_t hi), void* ctx) {
    for (size_t i = 0, used = internal_used(); i < used; ++i) {
        uintptr_t lo = g_internal[i].lo.load(std::memory_order_acquire);
        if (lo > 1) fn(ctx, lo, g_internal[i].hi.load(std::memory_order_relaxed));
    }
}

void* map_aligned(size_t size, size_t alignment) {
    size = round_page(size);
    if (size == 0 || size + alignment < size) {
        errno = ENOMEM;
        return nullptr;
    }
    // ZendMM's way: first try the exact size, which is often aligned already
    // because the kernel places mappings next to each other.
    void* p = map_heap(size);
    if (p == nullptr) return nullptr;
    if ((reinterpret_cast<uintptr_t>(p) & (alignment - 1)) == 0) return p;
    unmap_heap(p, size);
    size_t span = size + alignment - k_page;
    if (span < size) {
        errno = ENOMEM;
        return nullptr;
    }
    char* base = static_cast<char*>(map_heap(span));
    if (base == nullptr) return nullptr;
    uintptr_t b = reinterpret_cast<uintptr_t>(base);
    uintptr_t a = (b + alignment - 1) & ~(uintptr_t{alignment} - 1);
    size_t head = a - b;
    size_t tail = span - head - size;
    if (head) unmap_heap(base, head);
    if (tail) unmap_heap(reinterpret_cast<char*>(a) + size, tail);
    return reinterpret_cast<void*>(a);
}

bool purge(void* p, size_t size) {
    Errno_keeper keep;
    return madvise(p, size, MADV_DONTNEED) == 0;
}

Remap remap_in_place(void* p, size_t old_size, size_t new_size) {
    Unmap_guard guard;
    int saved = errno;
    void* r = mremap(p, round_page(old_size), round_page(new_size), 0);
    const Remap result = r != MAP_FAILED ? Remap::done : errno == ENOMEM ? Remap::no_room : Remap::refused;
    errno = saved;
    return result;
}

bool remap_to(void* old_p, size_t old_size, void* new_p, size_t new_size) {
    Unmap_guard guard;
    int saved = errno;
    void* r = mremap(old_p, round_page(old_size), round_page(new_size),
                     MREMAP_MAYMOVE | MREMAP_FIXED, new_p);
    errno = saved;
    return r == new_p;
}

void advise_no_huge_pages(void* p, size_t size) {
    int saved = errno;
    madvise(p, size, MADV_NOHUGEPAGE);
    errno = saved;
}

void advise_huge_pages(void* p, size_t size) {
    int saved = errno;
    madvise(p, size, MADV_HUGEPAGE);
    errno = saved;
}

bool resident_pages(const void* p, size_t size, unsigned char* vec, bool* unmapped) {
    int saved = errno;
    bool ok = mincore(const_cast<void*>(p), size, vec) == 0;
    if (unmapped) *unmapped = !ok && errno == ENOMEM;
    errno = saved;
    return ok;
}

bool is_mapped(const void* p) {
    unsigned char vec;
    return resident_pages(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~(k_page - 1)), k_page, &vec);
}

bool copy_mapped(void* dst, const void* src, size_t n) {
    Errno_keeper keep;
    iovec local{dst, n};
    iovec remote{const_cast<void*>(src), n};
    const ssize_t got = process_vm_readv(process_id(), &local, 1, &remote, 1, 0);
    if (got == static_cast<ssize_t>(n)) return true;
    if (got >= 0 || (errno != ENOSYS && errno != EPERM)) return false;
    const uintptr_t a = reinterpret_cast<uintptr_t>(src);
    if (!is_mapped(src) || !is_mapped(reinterpret_cast<const void*>(a + n - 1))) return false;
    memcpy(dst, src, n);
    return true;
}

namespace {
int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}
}  // namespace

const char* parse_maps_range(const char* p, const char* end, uintptr_t* lo, uintptr_t* hi) {
    uintptr_t a = 0, b = 0;
    for (int d; p < end && (d = hex_value(*p)) >= 0; ++p) a = a << 4 | static_cast<uintptr_t>(d);
    if (p == end || *p++ != '-') return nullptr;
    for (int d; p < end && (d = hex_value(*p)) >= 0; ++p) b = b << 4 | static_cast<uintptr_t>(d);
    *lo = a;
    *hi = b;
    return p;
}

bool for_each_line(int fd, bool (*fn)(const char* line, const char* end, void* ctx), void* ctx) {
    char buf[8192];
    size_t have = 0;
    bool skipping = false;  // the rest of a line longer than the buffer (its start went to fn)
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        have += static_cast<size_t>(n);
        const char* p = buf;
        const char* end = buf + have;
        for (;;) {
            const char* nl = static_cast<const char*>(memchr(p, '\n', static_cast<size_t>(end - p)));
            if (skipping) {
                if (!nl) {
                    p = end;
                    break;
                }
                skipping = false;
                p = nl + 1;
                continue;
            }
            if (!nl && n > 0 && !(p == buf && have == sizeof buf)) break;  // the line's end is still to come
            if (!nl && p == end) break;
            if (!fn(p, nl ? nl : end, ctx)) return false;
            if (!nl && n > 0) skipping = true;  // a line longer than the buffer: its start only
            p = nl ? nl + 1 : end;
        }
        if (n == 0) return true;
        have = static_cast<size_t>(end - p);
        memmove(buf, p, have);
    }
}

bool mapping_of(uintptr_t address, uintptr_t* lo, uintptr_t* hi, char* path, size_t path_size) {
    int saved = errno;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved;
        return false;
    }
    struct Query {
        uintptr_t address, *lo, *hi;
        char* path;
        size_t path_size;
        bool found;
    } q{address, lo, hi, path, path_size, false};
    for_each_line(
        fd,
        [](const char* line, const char* end, void* ctx) {
            auto* q = static_cast<Query*>(ctx);
            uintptr_t a, b;
            const char* p = parse_maps_range(line, end, &a, &b);
            if (!p || q->address < a || q->address >= b) return true;
            *q->lo = a;
            *q->hi = b;
            if (q->path && q->path_size) {
                const char* slash = static_cast<const char*>(memchr(p, '/', static_cast<size_t>(end - p)));
                size_t len = slash ? static_cast<size_t>(end - slash) : 0;
                if (len >= q->path_size) len = q->path_size - 1;
                if (len) memcpy(q->path, slash, len);
                q->path[len] = 0;
            }
            q->found = true;
            return false;
        },
        &q);
    close(fd);
    errno = saved;
    return q.found;
}

int write_all(int fd, const char* s, size_t n) {
    int saved = errno, failed = 0;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            failed = errno;
            break;
        }
        if (w == 0) {  // (a device that takes nothing: as full)
            failed = ENOSPC;
            break;
        }
        s += w;
        n -= static_cast<size_t>(w);
    }
    errno = saved;
    return failed;
}

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

bool no_swap() {
    static std::atomic<uint64_t> asked_ns{0};
    static std::atomic<bool> answer{false};
    const uint64_t now = coarse_monotonic_ns();
    const uint64_t asked = asked_ns.load(std::memory_order_relaxed);
    if (asked == 0 || now - asked >= 1'000'000'000u) {
        int saved = errno;
        struct sysinfo si {};
        answer.store(sysinfo(&si) == 0 && si.totalswap == 0, std::memory_order_relaxed);
        errno = saved;
        asked_ns.store(now ? now : 1, std::memory_order_relaxed);
    }
    return answer.load(std::memory_order_relaxed);
}

uint64_t coarse_monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

uintptr_t current_break() {
    int saved = errno;
    long b = syscall(SYS_brk, 0);
    errno = saved;
    return b < 0 ? 0 : static_cast<uintptr_t>(b);
}

uint64_t random_u64() {
    int saved = errno;
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != sizeof v) {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = static_cast<uint64_t>(ts.tv_nsec) * 0x9E3779B97F4A7C15ull ^
            reinterpret_cast<uintptr_t>(&v) ^ static_cast<uint64_t>(getpid()) << 32;
    }
    errno = saved;
    return v | 1;
}

namespace {
// The page that keeps the pid (nullptr before the first call; the process's
// own pid in it, or 0 in a child until it asks).
std::atomic<std::atomic<int>*> g_pid_cell{nullptr};
// nullptr where the kernel cannot wipe a page in a child (before 4.14):
// then every call asks.
std::atomic<int>* pid_cell() {
    static std::atomic<bool> unsupported{false};
    if (std::atomic<int>* cell = g_pid_cell.load(std::memory_order_acquire)) return cell;
    if (unsupported.load(std::memory_order_relaxed)) return nullptr;
    Errno_keeper keep;
    void* page = map(k_page);
    if (!page) return nullptr;
    if (madvise(page, k_page, MADV_WIPEONFORK) != 0) {
        unmap(page, k_page);
        unsupported.store(true, std::memory_order_relaxed);
        return nullptr;
    }
    auto* cell = new (page) std::atomic<int>(0);
    std::atomic<int>* expected = nullptr;
    if (g_pid_cell.compare_exchange_strong(expected, cell, std::memory_order_acq_rel)) return cell;
    // Another thread's came first: this page goes back as an ordinary one
    // (unmap may keep it for the next map()).
    madvise(page, k_page, MADV_KEEPONFORK);
    unmap(page, k_page);
    return expected;
}

__attribute__((tls_model("initial-exec"))) thread_local int t_tid = 0;
__attribute__((tls_model("initial-exec"))) thread_local int t_tid_pid = 0;  // the pid t_tid was read under
}  // namespace

int process_id() {
    std::atomic<int>* cell = pid_cell();
    if (!cell) return getpid();
    int pid = cell->load(std::memory_order_relaxed);
    if (pid == 0) {
        pid = getpid();
        cell->store(pid, std::memory_order_relaxed);
    }
    return pid;
}

int thread_id() {
    const int pid = process_id();
    if (t_tid_pid != pid) {
        t_tid = static_cast<int>(syscall(SYS_gettid));
        t_tid_pid = pid;
    }
    return t_tid;
}

int tgkill(int tid, int sig) { return static_cast<int>(syscall(SYS_tgkill, process_id(), tid, sig)); }

bool file_id_of(int fd, File_id* out) {
    struct stat st{};
    if (fd < 0 || fstat(fd, &st) != 0) return false;
    *out = File_id{st.st_dev, st.st_ino};
    return true;
}

bool is_file(int fd, File_id id) {
    File_id now;
    return file_id_of(fd, &now) && now.dev == id.dev && now.ino == id.ino;
}

void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>& word, int count) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, count, nullptr, nullptr, 0);
}

bool Kept_fd::keep(int kept) {
    File_id id;
    if (!file_id_of(kept, &id)) return false;
    fd = kept;
    owner = process_id();
    file = id;
    return true;
}

void Kept_fd::close_and_forget() {
    if (is_file(fd, file)) close(fd);
    forget();
}

int move_out_of_the_way(int fd) {
    int moved;
    {
        Errno_keeper keep;
        moved = fcntl(fd, F_DUPFD_CLOEXEC, 600);
        if (moved < 0) moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);  // (a descriptor limit under 600)
    }
    if (moved < 0) return fd;
    close(fd);
    return moved;
}

Standard_descriptors_held::Standard_descriptors_held() {
    Errno_keeper keep;
    while (count_ < 3) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) break;
        File_id file;
        if (fd > 2 || !file_id_of(fd, &file)) {
            close(fd);
            break;
        }
        held_[count_++] = Held{fd, file};
    }
}

Standard_descriptors_held::~Standard_descriptors_held() {
    Errno_keeper keep;
    // (Only what is still ours: a thread of the program's may have put its
    // own on that number meanwhile, by dup2.)
    while (count_) {
        const Held& h = held_[--count_];
        if (is_file(h.fd, h.file)) close(h.fd);
    }
}

}  // namespace zmm::os
