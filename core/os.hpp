// The operating system, as the heap sees it. Nothing else in zmm calls mmap.
//
// Every function is async-signal-safe and allocation-free: they are called
// from inside malloc, from fork handlers and from fatal paths.
#pragma once

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace zmm::os {

// Blocks every signal (the raw system call: zmm's own signals too) until
// destroyed.
class Signals_blocked {
public:
    Signals_blocked() {
        sigset_t all;
        sigfillset(&all);
        syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, &old_, _NSIG / 8);
    }
    ~Signals_blocked() { syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old_, nullptr, _NSIG / 8); }
    Signals_blocked(const Signals_blocked&) = delete;
    Signals_blocked& operator=(const Signals_blocked&) = delete;

private:
    sigset_t old_;
};

// Internal memory (tables, lists, records) comes from map()/unmap(), which
// keep a list of these mappings (lock-free, async-signal-safe): the leak scan
// must not read zmm's own tables as the program's roots. The heap's own
// memory (chunks, huge blocks) comes from map_heap()/unmap_heap() and
// map_aligned(), which the chunk registry describes instead.

// Maps `size` bytes of zeroed read-write memory whose start is a multiple of
// `alignment` (a power of two, at least the page size). Returns nullptr when
// the kernel refuses (errno is left as mmap set it). `size` is rounded up to
// whole pages.
void* map_aligned(size_t size, size_t alignment);

// Maps `size` bytes at no particular alignment (pages). nullptr on failure.
void* map(size_t size);
// The same, its contents unspecified (a kept mapping is not zeroed): for
// arrays that are written before they are read.
void* map_unzeroed(size_t size);
// Returns [p, p + size) to the OS: a whole mapping map() or map_unzeroed()
// returned.
void unmap(void* p, size_t size);

// The same for the heap's memory (not listed as internal). Any page-aligned
// part of a mapping may be returned.
void* map_heap(size_t size);
void unmap_heap(void* p, size_t size);

// The leak scan reads the heap's mappings while threads that did not stop
// for it may still run: between hold_heap_mappings() and
// release_heap_mappings() every unmap_heap() and remap (which give pages
// back) waits. hold waits for those already under way.
void hold_heap_mappings();
void release_heap_mappings();
// Held now (by a scan under way)? Work that may wait can be put off.
bool heap_mappings_held();
// In a forked child: no scan runs there.
void reset_heap_mappings_hold();
// Called over and over while an unmap waits for a scan (the waiting thread
// may stop for it there).
void set_unmap_wait_hook(void (*hook)());

// Did an internal mapping find no slot in the list (the scan would then
// read it as the program's)?
bool internal_overflowed();

// Calls fn for each live internal mapping [lo, hi). Racy against threads
// mapping meanwhile: for the leak scan, with the other threads stopped.
void for_each_internal(void (*fn)(void* ctx, uintptr_t lo, uintptr_t hi), void* ctx);

// Tells the OS the pages' contents are no longer needed: they read as zero
// afterwards and stop counting towards RSS. The range stays mapped. False
// when the kernel refused (locked pages: mlockall): the contents stay.
bool purge(void* p, size_t size);

// Grows or shrinks a mapping in place (no move): done; no_room when the
// pages after it are taken (ENOMEM); refused for any other reason: the
// range is not one mapping (the program split it with madvise, mprotect or
// mlock: EFAULT), or locked memory would pass its limit (EAGAIN). A
// refused range must not be moved with remap_to either (it would fail the
// same way, and some kernels, 6.6's, have unmapped the target by then).
enum class Remap { done, no_room, refused };
Remap remap_in_place(void* p, size_t old_size, size_t new_size);

// Moves the mapping [old_p, old_p + old_size) to new_p (which must be a mapping
// of at least new_size bytes, replaced), growing it to new_size, without
// copying the pages. false on failure, with the old mapping unchanged; the
// target may be unmapped then (6.6 unmaps it before its checks), so a
// caller tries this only for a range remap_in_place found without room.
bool remap_to(void* old_p, size_t old_size, void* new_p, size_t new_size);

// Transparent huge pages: zmm's chunks ask for none unless enabled.
void advise_no_huge_pages(void* p, size_t size);
void advise_huge_pages(void* p, size_t size);

// Is the page containing p mapped? (mincore; no fault on unmapped memory.)
bool is_mapped(const void* p);

// Copies n bytes from src to dst where src may be unmapped by another thread
// meanwhile: read through the kernel (process_vm_readv), where a page that
// is gone is an error, not a fault. false: [src, src + n) could not be read
// whole. Where the kernel refuses the call (a seccomp filter), the bytes are
// read directly when mincore finds their pages mapped: that read can still
// race an unmap, and faults on a page mapped without PROT_READ.
bool copy_mapped(void* dst, const void* src, size_t n);

// Which pages of [p, p + size) (p page-aligned, size at most 4 MiB) are
// resident: vec[i] & 1 for page i. false if the kernel cannot say;
// `*unmapped` (if given) then says whether that is because part of the
// range is not mapped (ENOMEM).
bool resident_pages(const void* p, size_t size, unsigned char* vec, bool* unmapped = nullptr);
// Is there no swap? Then an anonymous private page that is not resident
// was never written since it was mapped or purged: it reads as zero. (With
// swap it may be swapped out.) Asked of the kernel at most once a second.
bool no_swap();

// write(2) until done or an error other than EINTR.
// Writes all n bytes (again after EINTR and short writes); 0, or the errno
// of the write that failed. errno itself is kept.
int write_all(int fd, const char* s, size_t n);

// Reads `fd` to its end a line at a time (no allocation): fn(line, end, ctx)
// gets each one without its newline (the last one even without one; of a
// line longer than the 8 KiB buffer, its start), and stops the reading by
// returning false. False if fn stopped it or a read failed.
bool for_each_line(int fd, bool (*fn)(const char* line, const char* end, void* ctx), void* ctx);
// The "lo-hi" that starts a /proc/self/maps line in [p, end) (lowercase
// hexadecimal, as the kernel writes it): where the text after hi starts, or
// nullptr if the line does not start so.
const char* parse_maps_range(const char* p, const char* end, uintptr_t* lo, uintptr_t* hi);

// The mapping that holds `address`, from /proc/self/maps (no allocation):
// its bounds, and (if `path`) the file the kernel names for it ("" for an
// anonymous one). False if it cannot be read or no mapping holds it.
bool mapping_of(uintptr_t address, uintptr_t* lo, uintptr_t* hi, char* path, size_t path_size);

// The current program break (brk), or 0.
uintptr_t current_break();

// CLOCK_MONOTONIC in nanoseconds.
uint64_t monotonic_ns();
// CLOCK_MONOTONIC_COARSE (a few ms of resolution, cheaper): for intervals
// of 100 ms.
uint64_t coarse_monotonic_ns();

uint64_t random_u64();
// The process's id and the calling thread's, without a system call after
// the first: the pid is kept in a page the kernel wipes in a child
// (MADV_WIPEONFORK: fork, or a clone that skipped the atfork handlers), the
// tid per thread with the pid it was read under.
int process_id();
int thread_id();
// Sends sig to thread tid of this process; 0 or -1 (errno).
int tgkill(int tid, int sig);

// errno as the program left it, back when the scope ends: for what zmm
// does on the program's behalf (a request's begin and end, whose system
// calls and libraries set errno).
struct Errno_keeper {
    int saved = errno;
    ~Errno_keeper() { errno = saved; }
};

// Which file a descriptor is (its device and inode): for a descriptor zmm
// keeps, whose number the program may have closed and reused since.
struct File_id {
    dev_t dev = 0;
    ino_t ino = 0;
};
// fd's file into *out; false if fd is not open.
bool file_id_of(int fd, File_id* out);
// Is fd (still) open on the file `id` names?
bool is_file(int fd, File_id id);

// A futex on `word`: wait while it holds `expected` (returns on a wake, a
// signal, or at once if it holds something else), and wake up to `count`
// waiters. Private to the process.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected);
void futex_wake(std::atomic<uint32_t>& word, int count);

// A descriptor zmm keeps, moved out of the way of the program's small
// numbers (from 600, else from 3: never 0-2, nor the lowest free number a
// program that closed one expects back from its next open), close-on-exec.
// The new number, `fd` closed; or fd itself when no other number is free.
int move_out_of_the_way(int fd);

// A descriptor zmm keeps from one use to the next (the symbolizer's socket,
// the leak scan's /proc/self/maps): valid in the process that kept it (a
// forked child inherits the parent's), while its number still holds the
// file kept (the program may have closed it and reused the number).
struct Kept_fd {
    int fd = -1;
    int owner = 0;  // the process that kept it
    File_id file;
    // Keeps fd (already moved out of the way); false when it is not open.
    bool keep(int fd);
    bool is_ours() const { return fd >= 0 && owner == process_id() && is_file(fd, file); }
    // Closes it if its number still holds the file kept (in any process:
    // a forked child closes the parent's), and forgets it.
    void close_and_forget();
    // Forgets it, open or not (its number may be the program's by now).
    void forget() {
        fd = -1;
        owner = 0;
    }
};

// While a library zmm uses opens descriptors it keeps (libunwind's pipe,
// libdw's files), the standard ones a program closed are held with
// /dev/null: on 0-2 they would be replaced by the program's next dup2 onto
// stdin, stdout or stderr (daemon(3) does that) and read or written as
// something else (a write to /dev/null calls any address readable to
// libunwind, which would then read an unmapped one). errno is kept.
class Standard_descriptors_held {
public:
    Standard_descriptors_held();
    ~Standard_descriptors_held();
    Standard_descriptors_held(const Standard_descriptors_held&) = delete;
    Standard_descriptors_held& operator=(const Standard_descriptors_held&) = delete;

private:
    struct Held {
        int fd;
        File_id file;
    };
    Held held_[3];
    int count_ = 0;
};

}  // namespace zmm::os
