#include "chunk.hpp"

#include <cstring>

#include "os.hpp"
#include "spin_lock.hpp"

namespace zmm {

namespace carried_bits_pool {
namespace {
constexpr size_t k_per_mapping = 64;
constinit Spin_lock g_lock;
uint64_t* g_free;        // given back, linked through their first word
char* g_next;            // the current mapping's next unused bits
size_t g_left;           // ... and how many it has left
}  // namespace

uint64_t* take() {
    uint64_t* bits = nullptr;
    {
        Lock_guard guard(g_lock);
        if (g_free) {
            bits = g_free;
            g_free = reinterpret_cast<uint64_t*>(bits[0]);
        } else {
            if (g_left == 0) {
                g_next = static_cast<char*>(os::map(k_per_mapping * k_carried_bits_bytes));
                if (!g_next) return nullptr;
                g_left = k_per_mapping;
            }
            bits = reinterpret_cast<uint64_t*>(g_next);
            g_next += k_carried_bits_bytes;
            --g_left;
            return bits;  // fresh from mmap: zero
        }
    }
    memset(bits, 0, k_carried_bits_bytes);
    return bits;
}

void give(uint64_t* bits) {
    Lock_guard guard(g_lock);
    bits[0] = reinterpret_cast<uintptr_t>(g_free);
    g_free = bits;
}

void before_fork() { g_lock.lock(); }
void after_fork_parent() { g_lock.unlock(); }
void after_fork_child() { g_lock.reset(); }
}  // namespace carried_bits_pool

void Chunk::init(Heap* owner, uint32_t number, Pages pages) {
    heap = owner;
    next = prev = nullptr;
    carried_bits = nullptr;  // (Heap::drop_carried gave them back, if any)
    has_carried = false;
    if (pages == Pages::fresh) was_huge_block = false;  // (else it stays: the chunk's address is the block's)
    num = number;
    free_pages = k_chunk_pages - 1;
    for (auto& w : free_map) w = 0;
    for (auto& m : map) m = 0;
    if (pages == Pages::fresh) {
        for (auto& w : dirty_map) w = 0;
        for (auto& w : aged_map) w = 0;
    } else if (pages == Pages::all_dirty) {
        for (auto& w : dirty_map) w = ~uint64_t{0};
    }
    dirty_map[0] &= ~uint64_t{1};  // the header is never purged
    aged_map[0] &= ~uint64_t{1};
    free_map[0] = 1;
    map[0] = k_large | 1;  // the header is a one-page run that is never freed
}

bool Chunk::pages_free(unsigned first, unsigned count) const {
    if (first + count > k_chunk_pages) return false;
    for (unsigned p = first; p < first + count;) {
        unsigned bit = p & 63;
        unsigned n = 64 - bit < first + count - p ? 64 - bit : first + count - p;
        uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
        if (free_map[p >> 6] & mask) return false;
        p += n;
    }
    return true;
}

unsigned Chunk::mark_used(unsigned first, unsigned count) {
    unsigned reused_dirty = 0;
    for (unsigned p = first; p < first + count;) {
        unsigned bit = p & 63;
        unsigned n = 64 - bit < first + count - p ? 64 - bit : first + count - p;
        uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
        free_map[p >> 6] |= mask;
        reused_dirty += static_cast<unsigned>(__builtin_popcountll(dirty_map[p >> 6] & mask));
        dirty_map[p >> 6] &= ~mask;
        aged_map[p >> 6] &= ~mask;
        p += n;
    }
    free_pages -= count;
    return reused_dirty;
}

unsigned Chunk::mark_free(unsigned first, unsigned count) {
    unsigned newly_dirty = 0;
    for (unsigned p = first; p < first + count;) {
        unsigned bit = p & 63;
        unsigned n = 64 - bit < first + count - p ? 64 - bit : first + count - p;
        uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
        free_map[p >> 6] &= ~mask;
        newly_dirty += static_cast<unsigned>(__builtin_popcountll(~dirty_map[p >> 6] & mask));
        dirty_map[p >> 6] |= mask;
        p += n;
    }
    free_pages += count;
    return newly_dirty;
}

unsigned Chunk::dirty_count() const {
    unsigned n = 0;
    for (uint64_t w : dirty_map) n += static_cast<unsigned>(__builtin_popcountll(w));
    return n;
}

namespace {
// The first page at or after `from` whose bit equals `used`, or 512.
unsigned next_page(const uint64_t* map, unsigned from, bool used) {
    while (from < k_chunk_pages) {
        uint64_t w = map[from >> 6];
        if (!used) w = ~w;
        w &= ~uint64_t{0} << (from & 63);
        if (w) return (from & ~63u) + static_cast<unsigned>(__builtin_ctzll(w));
        from = (from & ~63u) + 64;
    }
    return k_chunk_pages;
}
}  // namespace

unsigned Chunk::find_run(unsigned count) const {
    if (free_pages < count) return 0;
    unsigned best = 0, best_len = k_chunk_pages;
    unsigned p = 1;
    while (p < k_chunk_pages) {
        unsigned start = next_page(free_map, p, false);
        if (start >= k_chunk_pages) break;
        unsigned end = next_page(free_map, start, true);
        unsigned len = end - start;
        if (len == count) return start;
        if (len > count && len < best_len) {
            best = start;
            best_len = len;
        }
        p = end;
    }
    return best;
}

unsigned Chunk::find_aligned_run(unsigned count, unsigned align_pages) const {
    if (free_pages < count) return 0;
    unsigned p = 1;
    while (p < k_chunk_pages) {
        unsigned start = next_page(free_map, p, false);
        if (start >= k_chunk_pages) break;
        unsigned end = next_page(free_map, start, true);
        unsigned a = (start + align_pages - 1) / align_pages * align_pages;
        if (a + count <= end) return a;
        p = end;
    }
    return 0;
}

const char* Chunk::check() const {
    unsigned free_count = 0;
    for (unsigned p = 1; p < k_chunk_pages; ++p)
        if (!page_used(p)) ++free_count;
    if (free_count != free_pages) return "free_pages disagrees with free_map";
    if (!page_used(0) || map[0] != (k_large | 1)) return "header page not reserved";
    for (unsigned w = 0; w < k_chunk_pages / 64; ++w)
        if (dirty_map[w] & free_map[w]) return "a page in use is marked dirty";
    for (unsigned p = 1; p < k_chunk_pages;) {
        uint32_t m = map[p];
        if (m & k_small) {
            unsigned bin = small_bin(m);
            if (bin >= k_bins || small_run_first_page(m) != p)
                return "small run does not start at its first page";
            for (unsigned i = 0; i < k_bin_pages[bin]; ++i) {
                if (!page_used(p + i)) return "small run page marked free";
                if (without_slow_free(map[p + i]) != small_page_word(bin, p))
                    return "small run page has a wrong map word";
            }
            p += k_bin_pages[bin];
        } else if (m & k_large) {
            unsigned n = m & k_pages_mask;
            if (n == 0 || p + n > k_chunk_pages) return "large run length out of range";
            for (unsigned i = 0; i < n; ++i) {
                if (!page_used(p + i)) return "large run page marked free";
                if (i && map[p + i] != (k_large_tail | i)) return "large run tail page has a wrong map word";
            }
            p += n;
        } else {
            if (page_used(p)) return "used page without a run";
            if (m != 0 && m != k_large_freed) return "free page with a stale map word";
            ++p;
        }
    }
    return nullptr;
}

}  // namespace zmm
