#include "reachability.hpp"

#include <atomic>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "block_table.hpp"
#include "chunk.hpp"
#include "chunk_registry.hpp"
#include "heap.hpp"
#include "os.hpp"

namespace zmm {

namespace {
bool g_narrow_only = false;  // set_narrow_only
size_t round_pages(size_t n) { return (n + k_page_size - 1) & ~(k_page_size - 1); }
uint64_t hash_address(uintptr_t a) { return (a >> 4) * 0x9E3779B97F4A7C15ull; }

#if defined(__x86_64__)
// Does the CPU run AVX2, and does the OS save its registers? Asked at the
// first scan, once. (Not libgcc's __builtin_cpu_supports: its constructor
// asks cpuid a dozen times as every process starts, and each cpuid leaves
// a virtual machine for the hypervisor: about 20 us a start here.)
bool cpu_runs_avx2() {
    static std::atomic<int> known{-1};
    int k = known.load(std::memory_order_relaxed);
    if (k < 0) {
        unsigned a, b, c, d;
        bool avx2 = false;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) && (c & bit_AVX)) {
            unsigned lo, hi;
            asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));  // XCR0: SSE and AVX state saved
            if ((lo & 6) == 6 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) avx2 = (b & bit_AVX2) != 0;
        }
        k = avx2;
        known.store(k, std::memory_order_relaxed);
    }
    return k != 0;
}
#endif
}  // namespace

void Reachability::set_narrow_only(bool on) { g_narrow_only = on; }

bool Reachability::prepare(Leak* blocks, size_t count) {
    release();
#if defined(__x86_64__)
    wide_ = !g_narrow_only && cpu_runs_avx2();
#endif
    blocks_ = blocks;
    count_ = count;
    if (count == 0) return true;
    capacity_ = 16;
    while (capacity_ < count * 2) capacity_ *= 2;
    slots_ = static_cast<Slot*>(os::map(round_pages(capacity_ * sizeof(Slot))));
    work_ = static_cast<uint32_t*>(os::map_unzeroed(round_pages(count * sizeof(uint32_t))));
    if (!slots_ || !work_) {
        release();
        return false;
    }
    unsigned shift = 64 - static_cast<unsigned>(__builtin_ctzll(capacity_));
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t i = 0; i < count; ++i) {
        Leak& b = blocks[i];
        // Still a live block? (A share of a process-wide request ends before
        // the scan: its blocks may be freed, even unmapped, since.)
        size_t usable = Heap::live_block_size(reinterpret_cast<void*>(b.address));
        if (!usable) {
            b.kind = Leak_kind::gone;
            continue;
        }
        b.kind = Leak_kind::definite;
        size_t k = static_cast<size_t>(hash_address(b.address) >> shift);
        while (slots_[k].address) k = (k + 1) & (capacity_ - 1);
        slots_[k] = Slot{b.address, static_cast<uint32_t>(i)};
        // The span a pointer may fall in: the whole block (the usable size
        // may exceed the requested one; resolve() decides exactly).
        uintptr_t end = b.address + (usable > b.size ? usable : b.size);
        if (b.address < lo) lo = b.address;
        if (end > hi) hi = end;
        filter_granules(b.address, end);
    }
    if (lo > hi) lo = hi = 0;  // every candidate gone
    lo_ = lo;
    span_ = hi - lo;
    return true;
}

void Reachability::release() {
    if (slots_) os::unmap(slots_, round_pages(capacity_ * sizeof(Slot)));
    if (work_) os::unmap(work_, round_pages(count_ * sizeof(uint32_t)));
    slots_ = nullptr;
    work_ = nullptr;
    capacity_ = 0;
    work_count_ = 0;
    lo_ = span_ = 0;
    for (auto& f : filter_) f = 0;
    scanned_ = 0;
    indirect_pass_ = false;
    current_ = -1;
    found_work_.release();
    found_again_ = 0;
    blocks_ = nullptr;
    count_ = 0;
}

long Reachability::find(uintptr_t start) const {
    if (!capacity_) return -1;
    unsigned shift = 64 - static_cast<unsigned>(__builtin_ctzll(capacity_));
    for (size_t k = static_cast<size_t>(hash_address(start) >> shift);; k = (k + 1) & (capacity_ - 1)) {
        if (slots_[k].address == start) return slots_[k].index;
        if (!slots_[k].address) return -1;
    }
}

uintptr_t Reachability::block_start(uintptr_t v, size_t* usable) {
    const void* p = reinterpret_cast<const void*>(v);
    uintptr_t start;
    switch (granule_of(p)) {
        case granule_chunk: {
            Chunk* c = Chunk::of(p);
            unsigned page = Chunk::page_of(p);
            if (page == 0) return 0;
            uint32_t m = c->map[page];
            if (m & k_small) {
                unsigned bin = small_bin(m);
                uintptr_t run = reinterpret_cast<uintptr_t>(c->page_address(small_run_first_page(m)));
                uintptr_t slot = (v - run) / k_bin_size[bin];
                if (slot >= k_bin_count[bin]) return 0;
                start = run + slot * k_bin_size[bin];
            } else if (m & k_large) {
                start = reinterpret_cast<uintptr_t>(c->page_address(page));
            } else if (m & k_large_tail) {
                unsigned back = m & k_pages_mask;
                if (back > page) return 0;
                start = reinterpret_cast<uintptr_t>(c->page_address(page - back));
            } else {
                return 0;
            }
            break;
        }
        case granule_huge:
        case granule_huge_tail:
            start = reinterpret_cast<uintptr_t>(registry_huge_start(p));
            if (!start) return 0;
            break;
        default:
            return 0;
    }
    *usable = Heap::usable_size(reinterpret_cast<void*>(start));
    return start;
}

long Reachability::candidate_at(uintptr_t v, uintptr_t start, size_t usable) const {
    long i = find(start);
    if (i < 0) return -1;
    // Past the block's end (a large run's or huge block's slack) is not in it.
    const Leak& b = blocks_[i];
    return v < start + (usable > b.size ? usable : b.size) ? i : -1;
}

long Reachability::resolve(uintptr_t v) const {
    if (v - lo_ >= span_ || !filtered(v)) return -1;
    size_t usable;
    uintptr_t start = block_start(v, &usable);
    return start ? candidate_at(v, start, usable) : -1;
}

void Reachability::filter_granules(uintptr_t lo, uintptr_t hi) {
    for (uintptr_t g = lo >> 21; g <= (hi - 1) >> 21; ++g) {
        uint64_t bit = g * 0x9E3779B97F4A7C15ull >> 52;
        filter_[bit >> 6] |= uint64_t{1} << (bit & 63);
    }
}

void Reachability::extend_range(uintptr_t lo, uintptr_t hi) {
    uintptr_t old_lo = lo_, old_hi = lo_ + span_;
    if (span_ == 0) old_lo = lo, old_hi = hi;
    lo_ = lo < old_lo ? lo : old_lo;
    span_ = (hi > old_hi ? hi : old_hi) - lo_;
    filter_granules(lo, hi);
}

void Reachability::leave_out_lost(const Heap* heap, bool covered) {
    lost_heap_ = heap;
    lost_heap_covered_ = covered;
    if (!heap || !heap->blocks || !count_) return;
    // Its lost blocks may be found again: pointers into its chunks and huge
    // blocks are looked at.
    const Chunk* c = heap->chunks;
    for (size_t n = 0; c && n < heap->chunks_count; ++n, c = c->next) {
        uintptr_t a = reinterpret_cast<uintptr_t>(c);
        extend_range(a, a + k_chunk_size);
    }
    size_t n = 0;
    for (const Huge_header* h = heap->huge; h && n < (size_t{1} << 20); h = h->next, ++n) {
        uintptr_t a = reinterpret_cast<uintptr_t>(h) + k_page_size;  // the block
        extend_range(a, a + h->size);
    }
}

void Reachability::hit_lost(uintptr_t v, uintptr_t start, size_t usable) {
    if (v >= start + usable || !lost_heap_->blocks || Heap::owner_of(reinterpret_cast<void*>(start)) != lost_heap_)
        return;
    Block_info* b = lost_heap_->blocks->find(start);
    if (!b || !(b->flags & k_block_lost)) return;
    b->flags &= ~k_block_lost;  // a candidate of the next scans again
    ++found_again_;
    size_t bytes = (b->size < usable ? b->size : usable) & ~size_t{7};
    if (!found_work_.push(Found_again{start, bytes})) {
        auto* w = reinterpret_cast<const uintptr_t*>(start);  // no memory for the list: read it now
        scan_words(w, w + bytes / sizeof(uintptr_t));
    }
}

void Reachability::hit(uintptr_t v) {
    if (!filtered(v)) return;  // (scan_words tested the range)
    size_t usable;
    const uintptr_t start = block_start(v, &usable);
    if (!start) return;
    const long i = candidate_at(v, start, usable);
    if (i < 0) {
        if (lost_heap_ && !indirect_pass_) hit_lost(v, start, usable);
        return;
    }
    Leak& b = blocks_[i];
    if (indirect_pass_) {
        // Reached from a lost block: indirectly lost, unless reached from
        // roots already (or it is the block being read).
        if (b.kind == Leak_kind::definite && i != current_) b.kind = Leak_kind::indirect;
        return;
    }
    if (b.kind == Leak_kind::reachable) return;
    b.kind = Leak_kind::reachable;
    work_[work_count_++] = static_cast<uint32_t>(i);
}

#if defined(__x86_64__)
// Words compared 4 at a time (as unsigned, v - lo < span: signed, both sides
// biased by 2^63); a group of 8 with none in the candidates' range, most of
// a root, costs no branch of its own. Up to the last whole group.
__attribute__((target("avx2"))) const uintptr_t* Reachability::scan_words_wide(const uintptr_t* w,
                                                                               const uintptr_t* end) {
    const __m256i bias = _mm256_set1_epi64x(INT64_MIN);
    const __m256i low = _mm256_set1_epi64x(static_cast<int64_t>(lo_));
    const __m256i limit = _mm256_xor_si256(_mm256_set1_epi64x(static_cast<int64_t>(span_)), bias);
    for (; end - w >= 8; w += 8) {
        __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
        __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 4));
        a = _mm256_xor_si256(_mm256_sub_epi64(a, low), bias);
        b = _mm256_xor_si256(_mm256_sub_epi64(b, low), bias);
        unsigned near =
            static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(limit, a)))) |
            static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(limit, b)))) << 4;
        for (; __builtin_expect(near != 0, 0); near &= near - 1) hit(w[__builtin_ctz(near)]);
    }
    return w;
}
#endif

void Reachability::scan_words(const uintptr_t* w, const uintptr_t* end) {
    scanned_ += static_cast<uint64_t>(end - w) * sizeof(uintptr_t);
#if defined(__x86_64__)
    if (wide_) w = scan_words_wide(w, end);
#endif
    const uintptr_t lo = lo_, span = span_;
    for (; w < end; ++w) {
        uintptr_t v = *w;
        if (__builtin_expect(v - lo < span, 0)) hit(v);
    }
}

void Reachability::scan_root(const void* lo, const void* hi) {
    if (!count_) return;
    uintptr_t a = (reinterpret_cast<uintptr_t>(lo) + 7) & ~uintptr_t{7};
    uintptr_t b = reinterpret_cast<uintptr_t>(hi) & ~uintptr_t{7};
    if (a >= b) return;
    scan_words(reinterpret_cast<const uintptr_t*>(a), reinterpret_cast<const uintptr_t*>(b));
    flood();
}

// The bytes of candidate b to read: what the program asked for, within the
// block it has now.
size_t Reachability::bytes_of(const Leak& b) {
    size_t usable = Heap::usable_size(reinterpret_cast<void*>(b.address));
    return (b.size < usable ? b.size : usable) & ~size_t{7};
}

void Reachability::scan_root_resident(const void* lo_p, const void* hi_p) {
    if (!count_) return;
    uintptr_t lo = reinterpret_cast<uintptr_t>(lo_p) & ~uintptr_t{k_page_size - 1};
    uintptr_t hi = reinterpret_cast<uintptr_t>(hi_p);
    unsigned char vec[1024];
    while (lo < hi) {
        uintptr_t span = hi - lo < sizeof vec * k_page_size ? hi - lo : sizeof vec * k_page_size;
        bool unmapped = false;
        if (!os::resident_pages(reinterpret_cast<void*>(lo), span, vec, &unmapped)) {
            if (!unmapped) {  // the kernel cannot say: every page is read
                scan_root(reinterpret_cast<void*>(lo), reinterpret_cast<void*>(lo + span));
                lo += span;
                continue;
            }
            // Part of it is not mapped (a heap whose header outlived its
            // pages: an orphan in a forked child, caught mid-shrink): page
            // by page, the missing ones left out.
            for (size_t i = 0; i * k_page_size < span; ++i) {
                unsigned char v = 0;
                vec[i] = os::resident_pages(reinterpret_cast<void*>(lo + i * k_page_size), k_page_size, &v)
                             ? v
                             : 0;
            }
        }
        size_t pages = (span + k_page_size - 1) / k_page_size;
        for (size_t p = 0; p < pages;) {
            if (!(vec[p] & 1)) {
                ++p;
                continue;
            }
            size_t q = p;
            while (q < pages && (vec[q] & 1)) ++q;
            uintptr_t a = lo + p * k_page_size, b = lo + q * k_page_size < hi ? lo + q * k_page_size : hi;
            if (a < reinterpret_cast<uintptr_t>(lo_p)) a = reinterpret_cast<uintptr_t>(lo_p);
            scan_root(reinterpret_cast<void*>(a), reinterpret_cast<void*>(b));
            p = q;
        }
        lo += span;
    }
}

void Reachability::flood() {
    for (;;) {
        if (work_count_) {
            const Leak& b = blocks_[work_[--work_count_]];
            auto* w = reinterpret_cast<const uintptr_t*>(b.address);
            scan_words(w, w + bytes_of(b) / sizeof(uintptr_t));
        } else if (found_work_.count) {
            Found_again f = found_work_.items[--found_work_.count];
            auto* w = reinterpret_cast<const uintptr_t*>(f.address);
            scan_words(w, w + f.bytes / sizeof(uintptr_t));
        } else {
            return;
        }
    }
}

bool Reachability::left_out(const Heap& heap, bool may_hold_candidates, uintptr_t block) const {
    if (may_hold_candidates && find(block) >= 0) return true;
    if (&heap != lost_heap_ || !heap.blocks) return false;
    const Block_info* b = heap.blocks->find(block);
    return b && (b->flags & k_block_lost);
}

void Reachability::scan_heap(const Heap& heap) {
    if (!count_) return;
    if (&heap == lost_heap_ && lost_heap_covered_) return;
    // Chunks: the circular list, at most chunks_count long.
    const Chunk* c = heap.chunks;
    for (size_t n = 0; c && n < heap.chunks_count; ++n, c = c->next) {
        if (granule_of(c) != granule_chunk || c->heap != &heap) break;
        bool may_hold_candidates = filtered(reinterpret_cast<uintptr_t>(c));
        for (unsigned page = 1; page < k_chunk_pages;) {
            uint32_t m = c->map[page];
            char* at = const_cast<Chunk*>(c)->page_address(page);
            if (m & k_small) {
                unsigned bin = small_bin(m);
                const size_t size = k_bin_size[bin];
                for (unsigned k = 0; k < k_bin_count[bin]; ++k) {
                    auto* s = reinterpret_cast<const uintptr_t*>(at + size_t{k} * size);
                    // A free slot proves it: its second word is its link's shadow.
                    if (heap.holds_link(s)) continue;
                    if (left_out(heap, may_hold_candidates, reinterpret_cast<uintptr_t>(s))) continue;
                    scan_words(s, s + size / sizeof(uintptr_t));
                }
                flood();
                unsigned pages = k_bin_pages[bin];
                page += pages;
            } else if (m & k_large) {
                unsigned pages = m & k_pages_mask;
                if (pages == 0 || page + pages > k_chunk_pages) break;
                if (!left_out(heap, may_hold_candidates, reinterpret_cast<uintptr_t>(at))) {
                    auto* w = reinterpret_cast<const uintptr_t*>(at);
                    scan_words(w, w + size_t{pages} * k_page_size / sizeof(uintptr_t));
                    flood();
                }
                page += pages;
            } else {
                ++page;
            }
        }
    }
    // Huge blocks.
    size_t n = 0;
    for (const Huge_header* h = heap.huge; h && n < (size_t{1} << 20); h = h->next, ++n) {
        const void* block = reinterpret_cast<const char*>(h) + k_page_size;
        // A block realloc_huge is moving is still listed, its registry
        // cleared first (granule_huge_unmapped), its pages perhaps gone:
        // passed over, not read. (Stopping there left the blocks after it
        // unread.) Anything else stops the walk before its header is read.
        const Granule g = granule_of(block);
        if ((g != granule_huge && g != granule_huge_unmapped) || h->magic != k_huge_magic || h->heap != &heap)
            break;
        if (g != granule_huge) continue;
        if (left_out(heap, true, reinterpret_cast<uintptr_t>(block))) continue;
        if (resident_only_) {
            scan_root_resident(block, static_cast<const char*>(block) + h->size);
        } else {
            auto* w = static_cast<const uintptr_t*>(block);
            scan_words(w, w + h->size / sizeof(uintptr_t));
            flood();
        }
    }
}

void Reachability::classify() {
    flood();
    // Each lost block is read once: what it points to that is lost too is
    // only indirectly lost (a block pointing into itself stays as it was).
    indirect_pass_ = true;
    for (size_t i = 0; i < count_; ++i) {
        const Leak& b = blocks_[i];
        if (b.kind == Leak_kind::reachable || b.kind == Leak_kind::gone) continue;
        current_ = static_cast<long>(i);
        auto* w = reinterpret_cast<const uintptr_t*>(b.address);
        scan_words(w, w + bytes_of(b) / sizeof(uintptr_t));
    }
    current_ = -1;
    indirect_pass_ = false;
}

}  // namespace zmm
