#include "heap.hpp"

#include "debug_checks.hpp"

#include <array>
#include <cerrno>
#include <cstring>

#include "heap_pool.hpp"
#include "os.hpp"

namespace zmm {

Heap_tuning g_tuning;
constinit Heap g_empty_heap{};

__attribute__((weak)) bool heap_limit_exceeded(Heap&, size_t) { return false; }
__attribute__((weak)) bool foreign_block_at_freed_huge_start(const void*) { return false; }

__attribute__((weak)) void* heap_missing(size_t) {
    errno = ENOMEM;
    return nullptr;
}

namespace {
constexpr size_t round_pages(size_t n) { return (n + k_page_size - 1) & ~(k_page_size - 1); }
bool page_aligned(const void* p) { return (reinterpret_cast<uintptr_t>(p) & (k_page_size - 1)) == 0; }
// A block freed through a remote stack keeps the link's shadow in its second
// word; reused (a page run, a cached huge mapping), it must not look freed
// (free_remote's double-free check).
void forget_remote_link(void* block) { static_cast<Free_slot*>(block)->shadow = 0; }
}  // namespace

void Heap_stats::add(const Heap_stats& o) {
    for (unsigned b = 0; b < k_bins; ++b) {
        small_allocs[b] += o.small_allocs[b];
        small_in_use[b] += o.small_in_use[b];
    }
    large_allocs += o.large_allocs;
    large_in_use_bytes += o.large_in_use_bytes;
    huge_allocs += o.huge_allocs;
    huge_in_use_bytes += o.huge_in_use_bytes;
    size += o.size;
    peak += o.peak;
    real_size += o.real_size;
    real_peak += o.real_peak;
    chunks += o.chunks;
    cached_chunks += o.cached_chunks;
    bytes_allocated += o.bytes_allocated;
    bytes_freed += o.bytes_freed;
    purged_bytes += o.purged_bytes;
    unmapped_bytes += o.unmapped_bytes;
}

void Heap::init(uint64_t free_list_key) {
    memset(static_cast<void*>(this), 0, sizeof *this);
    free_slot = empty_lists();
    own_chunk = no_own_chunks();
    bin_lookup = k_bin_lookup;
    key = free_list_key;
    limit = SIZE_MAX;
    for (unsigned b = 0; b < k_bins; ++b) {
        bin_slot_multiplier[b] = k_divisors.d[b].multiplier;
        bin_slot_limit[b] = k_divisors.d[b].limit;
        bin_size[b] = k_bin_size[b];
        bin_claim_low[b] = k_size_claims.c[b].low;
        bin_claim_span[b] = k_size_claims.c[b].span;
    }
}

// ============================================================================
// Chunks
// ============================================================================

bool Heap::grow_real(size_t bytes) {
    if (!fits_limit(bytes)) {
        collect();
        while (!fits_limit(bytes)) {
            if (!heap_limit_exceeded(*this, requesting ? requesting : bytes)) {
                errno = ENOMEM;
                return false;
            }
        }
    }
    return true;
}

Chunk* Heap::new_chunk() {
    // Every way counts a chunk against the limit first: a cached one too,
    // as ZendMM counts the chunk it takes from its cache (the cache was not
    // the request's: a request heap with cached chunks used them all past
    // its limit).
    if (!grow_real(k_chunk_size)) return nullptr;
    Chunk* c = cached;  // (after grow_real: its collect may have emptied the cache)
    bool from_cache = c != nullptr;
    if (c) {
        cached = reinterpret_cast<Chunk*>(c->next);
        --cached_count;
        note_held();
    } else if (Heap* src = chunk_source; src && src->cached) {
        c = src->cached;
        src->cached = c->next;
        --src->cached_count;
        size_t dirty = c->dirty_count();
        src->dirty_pages -= dirty;
        dirty_pages += dirty;
        src->lower_real(k_chunk_size);
        count_real(k_chunk_size);
        from_cache = true;
    } else if ((c = chunk_from_cached_huge())) {
        note_held();
        link_chunk(c);
        return c;
    } else {
        c = static_cast<Chunk*>(os::map_aligned(k_chunk_size, k_chunk_size));
        if (!c) {
            collect_for_os();
            c = static_cast<Chunk*>(os::map_aligned(k_chunk_size, k_chunk_size));
            if (!c) {
                errno = ENOMEM;
                return nullptr;
            }
        }
        if (g_tuning.huge_pages)
            os::advise_huge_pages(c, k_chunk_size);
        else
            os::advise_no_huge_pages(c, k_chunk_size);
        count_real(k_chunk_size);
        registry_mark(c, k_chunk_size, granule_chunk);
    }
    c->init(this, next_chunk_num++, from_cache ? Chunk::Pages::keep : Chunk::Pages::fresh);
    link_chunk(c);
    return c;
}

// A freed huge mapping of 2 MiB or more, kept in the huge cache, made a
// chunk: its block starts on a chunk boundary (every huge block does; the
// cache keeps only mappings that start at the block's header page), so its
// first 2 MiB are one, already resident. Its resident pages count as dirty
// (written, maybe); without swap, the others were never written (or were
// purged) and read as zero, as a fresh chunk's (with swap, or if mincore
// fails, all are dirty).
// The header page before it and the tail after it go back to the OS. The
// heap's free memory is then one pool, not two: without this, a program
// whose large runs and huge blocks take turns (bench_sizemix) kept both its
// empty chunks and its freed huge mappings resident, and mapped fresh
// chunks beside freed huge mappings it could not use. The smallest such
// mapping is taken (the least given back). The chunk is set up and named
// in the registry before anything is unmapped: an unmap may wait for a
// leak scan, which must not find the block's old bytes unlisted meanwhile
// (it would read them as roots), nor a chunk without its header.
Chunk* Heap::chunk_from_cached_huge() {
    Huge_header** best = nullptr;
    for (Huge_header** link = &huge_cache; Huge_header* h = *link; link = &h->next)
        if (h->map_size - k_page_size >= k_chunk_size && (!best || h->map_size < (*best)->map_size))
            best = link;
    if (!best) return nullptr;
    Huge_header* h = *best;
    *best = h->next;
    char* block = static_cast<char*>(h->block());
    char* map_base = h->map_base;
    const size_t map_size = h->map_size;
    huge_cache_pages -= map_size / k_page_size;
    Chunk* c = reinterpret_cast<Chunk*>(block);
    unsigned char resident[k_chunk_pages];
    if (os::no_swap() && os::resident_pages(block, k_chunk_size, resident)) {
        c->init(this, next_chunk_num++, Chunk::Pages::fresh);
        for (unsigned page = 1; page < k_chunk_pages; ++page)
            if (resident[page] & 1) c->dirty_map[page / 64] |= uint64_t{1} << (page % 64);
    } else {
        for (auto& w : c->aged_map) w = 0;  // (the block's bytes, else)
        c->init(this, next_chunk_num++, Chunk::Pages::all_dirty);
    }
    c->was_huge_block = true;
    dirty_pages += c->dirty_count();
    registry_mark(block, k_chunk_size, granule_chunk);
    char* tail = block + k_chunk_size;
    const size_t tail_size = static_cast<size_t>(map_base + map_size - tail);
    os::unmap_heap(map_base, k_page_size);  // h is gone from here
    if (tail_size) os::unmap_heap(tail, tail_size);
    lower_real(k_page_size + tail_size);
    unmapped_bytes += k_page_size + tail_size;
    if (g_tuning.huge_pages) os::advise_huge_pages(block, k_chunk_size);
    return c;
}

void Heap::collect_for_os() {
    collect();
    // A request heap's thread keeps its own caches (empty chunks, freed huge
    // mappings) in its persistent heap: the same thread's, given back too.
    if (chunk_source && chunk_source != this) chunk_source->collect();
}

void Heap::link_chunk(Chunk* c) {
    remember_chunk(c);
    if (chunks) {
        c->next = chunks;
        c->prev = chunks->prev;
        chunks->prev->next = c;
        chunks->prev = c;
    } else {
        c->next = c->prev = c;
        chunks = c;
    }
    ++chunks_count;
}

void Heap::forget_chunk(const Chunk* c) {
    uintptr_t& o = own_chunk[own_slot(reinterpret_cast<uintptr_t>(c))];
    if (o == reinterpret_cast<uintptr_t>(c)) o = k_no_chunk;
}

void Heap::unlink_chunk(Chunk* c) {
    forget_chunk(c);
    if (c->next == c) {
        chunks = nullptr;
    } else {
        c->prev->next = c->next;
        c->next->prev = c->prev;
        if (chunks == c) chunks = c->next;
    }
    --chunks_count;
    drop_carried(c);  // to the cache (empty), to another heap, or released
}

void Heap::unmap_chunk(Chunk* c) {
    dirty_pages -= c->dirty_count();
    registry_clear(c, k_chunk_size, c->was_huge_block ? granule_huge_unmapped : granule_none);
    os::unmap_heap(c, k_chunk_size);
    lower_real(k_chunk_size);
    unmapped_bytes += k_chunk_size;
}

// An empty chunk leaves the owned list: to the cache, or back to the OS.
void Heap::release_chunk(Chunk* c) {
    unlink_chunk(c);
    if (cached_count < g_tuning.cached_chunks) {
        // Its dirty pages stay counted; the next purge pass drops them.
        c->heap = this;
        c->next = cached;
        cached = c;
        ++cached_count;
        maybe_purge();
    } else {
        unmap_chunk(c);
    }
}

// ============================================================================
// Returning freed pages to the OS
//
// Freed pages stay resident ("dirty") so that reusing them costs no page
// fault. When a heap holds more than its budget of them (free pages of its
// chunks, cached chunks, cached huge mappings), a purge pass at most every
// k_purge_interval_ns gives back those that were dirty at the pass before
// (free for at least one interval: a decay in two generations) until the
// budget is left; beyond eight times the budget, down to the budget at once.
// Purging each run as it is freed, or every dirty page at each pass, would
// make a workload that frees and reuses large blocks fault on every reuse.
// The interval is 100 ms (free for 100 to 200 ms before it goes back), a
// trade of resident memory for page faults: bench_sizemix 2000000 (runs and
// huge blocks up to 4 MiB freed and reused at random) at 10 ms: 47k-60k
// faults, 0.45-0.58 s, peak RSS 78.6-80.1 MiB; 25 ms: 31k-33k, 0.50-0.52 s,
// 81-85 MiB; 50 ms: 28k, 0.46-0.53 s, 86-87 MiB; 100 ms: 24k, 0.39-0.46 s,
// 87 MiB (tcmalloc 27k, 0.46-0.50 s, 90.6 MiB; glibc 276k, 1.5 s, 67.7 MiB).
// The other benchmarks' RSS did not move.
// ============================================================================

namespace {
constexpr uint64_t k_purge_interval_ns = 100'000'000;
}  // namespace

// Gives back the dirty pages of c (all of them, or only the aged ones), at
// most `most` of them, and returns how many.
size_t Heap::purge_chunk(Chunk* c, bool only_aged, size_t most) {
    size_t purged = 0;
    for (unsigned w = 0; w < k_chunk_pages / 64; ++w) {
        uint64_t bits = only_aged ? c->dirty_map[w] & c->aged_map[w] : c->dirty_map[w];
        // (Past `most`, the pages keep their state: the word's aged map is
        // still brought up to date.)
        for (size_t n = static_cast<size_t>(__builtin_popcountll(bits)); n > most - purged; --n)
            bits &= ~(uint64_t{1} << (63 - __builtin_clzll(bits)));
        c->dirty_map[w] &= ~bits;
        c->aged_map[w] = c->dirty_map[w];  // what stays dirty is old at the next pass
        while (bits) {
            unsigned first = static_cast<unsigned>(__builtin_ctzll(bits));
            uint64_t shifted = ~(bits >> first);
            unsigned len = shifted ? static_cast<unsigned>(__builtin_ctzll(shifted)) : 64 - first;
            const uint64_t range = (len == 64 ? ~uint64_t{0} : ((uint64_t{1} << len) - 1) << first);
            if (os::purge(c->page_address(w * 64 + first), size_t{len} * k_page_size)) {
                purged += len;
                purged_bytes += size_t{len} * k_page_size;
            } else {
                // Refused (locked memory): the pages keep their contents, and
                // a free page that is not dirty must read as zero (calloc
                // trusts it).
                c->dirty_map[w] |= range;
                c->aged_map[w] |= range;
            }
            bits &= ~range;
        }
    }
    return purged;
}

void Heap::purge(bool only_aged, size_t keep_pages) {
    size_t resident = free_resident_pages();
    size_t most = resident > keep_pages ? resident - keep_pages : 0;
    size_t purged = 0;
    if (Chunk* c = chunks) {
        do {
            purged += purge_chunk(c, only_aged, most - purged);
            c = c->next;
        } while (c != chunks);
    }
    for (Chunk* c = cached; c; c = c->next) purged += purge_chunk(c, only_aged, most - purged);
    // Huge mappings cached for reuse: kept through one pass, like pages.
    Huge_header** link = &huge_cache;
    size_t unmapped_pages = 0;
    while (Huge_header* h = *link) {
        // Kept: past what this pass gives back, or not aged yet.
        if (purged + unmapped_pages >= most || (only_aged && !h->aged)) {
            if (only_aged) h->aged = true;
            link = &h->next;
            continue;
        }
        *link = h->next;
        unmapped_pages += h->map_size / k_page_size;
        huge_cache_pages -= h->map_size / k_page_size;
        lower_real(h->map_size);
        unmapped_bytes += h->map_size;
        // Marked before the unmap: after it another thread may map there.
        registry_clear(h->block(), k_page_size, granule_huge_unmapped);
        os::unmap_heap(h->map_base, h->map_size);
    }
    dirty_pages -= purged;
    last_purge_ns = os::coarse_monotonic_ns();
}

void Heap::maybe_purge() {
    heap_pool::trim_idle();
    size_t resident = free_resident_pages();
    if (resident <= g_tuning.dirty_budget_pages) return;
    if (resident > 8 * g_tuning.dirty_budget_pages)
        purge(false, g_tuning.dirty_budget_pages);
    else if (os::coarse_monotonic_ns() - last_purge_ns >= k_purge_interval_ns)
        purge(true, g_tuning.dirty_budget_pages);
}

// ============================================================================
// Pages (large runs and the runs of bins)
// ============================================================================

unsigned Heap::find_free_run(unsigned count, unsigned align_pages, Chunk** chunk_out) const {
    Chunk* c = chunks;
    if (!c) return 0;
    do {
        if (c->free_pages >= count) {
            unsigned page = align_pages > 1 ? c->find_aligned_run(count, align_pages) : c->find_run(count);
            if (page) {
                *chunk_out = c;
                return page;
            }
        }
        c = c->next;
    } while (c != chunks);
    return 0;
}

void* Heap::alloc_pages(unsigned count, unsigned align_pages, Chunk** chunk_out, bool* zeroed) {
    Chunk* c = nullptr;
    unsigned page = find_free_run(count, align_pages, &c);
    // Before a new chunk: the runs other threads freed wait on the remote
    // stack (until a bin of this heap runs dry, else).
    if (!page && has_remote_stack()) {
        drain_remote_stacks();
        page = find_free_run(count, align_pages, &c);
    }
    if (!page) {
        c = new_chunk();
        if (!c) return nullptr;
        page = align_pages > 1 ? align_pages : 1;
    }
    const unsigned reused_dirty = c->mark_used(page, count);
    dirty_pages -= reused_dirty;
    // A free page that is not dirty was never written since it was mapped,
    // or was purged since: it reads as zero.
    if (zeroed) *zeroed = reused_dirty == 0;
    *chunk_out = c;
    return c->page_address(page);
}

void* Heap::alloc_large(size_t bytes, bool* zeroed) {
    unsigned count = static_cast<unsigned>(round_pages(bytes) / k_page_size);
    Chunk* c;
    bool clean = false;
    char* p = static_cast<char*>(alloc_pages(count, 1, &c, &clean));
    if (!p) return nullptr;
    unsigned page = Chunk::page_of(p);
    c->map[page] = k_large | count;
    for (unsigned i = 1; i < count; ++i) c->map[page + i] = k_large_tail | i;
    if (!clean) forget_remote_link(p);  // (zero already, and left untouched)
    if (zeroed) *zeroed = clean;
    ++large_allocs;
    bytes_allocated_slow += size_t{count} * k_page_size;
    count_alloc(size_t{count} * k_page_size);
    return p;
}

void Heap::free_large(Chunk* c, unsigned page, unsigned count) {
    c->map[page] = k_large_freed;
    for (unsigned i = 1; i < count; ++i) c->map[page + i] = 0;
    dirty_pages += c->mark_free(page, count);
    count_free(size_t{count} * k_page_size);
    freed_bytes_large_huge += size_t{count} * k_page_size;
    if (c->empty())
        release_chunk(c);
    else
        maybe_purge();
}

// ============================================================================
// Small
// ============================================================================

void* Heap::alloc_small_slow(unsigned bin, size_t size_wanted) {
    if (this == &g_empty_heap) return heap_missing(size_wanted);
    requesting = size_wanted;
    if (remote_bins[bin].chains.load(std::memory_order_relaxed)) {
        take_remote_chains(bin);
        if (free_slot[bin] != k_list_end) return alloc_small(bin, size_wanted);
    }
    if (has_remote_stack()) {  // (other bins' chains wait for their bins to run out)
        drain_remote_stacks();
        if (free_slot[bin] != k_list_end) return alloc_small(bin, size_wanted);
    }
    // A new run: heaps idle in the pool give their memory back first (one
    // load while none waits; a look at the clock every run cut while some
    // do), so that a program that only allocates small blocks after its
    // threads left gets it back too.
    heap_pool::trim_idle();
    Chunk* c;
    char* run = static_cast<char*>(alloc_pages(k_bin_pages[bin], 1, &c));
    if (!run) return nullptr;
    unsigned page = Chunk::page_of(run);
    for (unsigned i = 0; i < k_bin_pages[bin]; ++i)
        c->map[page + i] = small_page_word(bin, page);
    // Cut the run into its slots, in address order (ZendMM), the first one
    // returned, the others on the free list.
    const size_t slot_size = k_bin_size[bin];
    if (g_tuning.poison_new_runs) memset(run, 0xdf, size_t{k_bin_pages[bin]} * k_page_size);
    Free_slot* first = reinterpret_cast<Free_slot*>(run);
    Free_slot* s = first;
    Free_slot* head = k_list_end;
    for (unsigned i = k_bin_count[bin] - 1; i > 0; --i) {
        Free_slot* slot = reinterpret_cast<Free_slot*>(run + i * slot_size);
        slot->next = head;
        slot->shadow = shadow_of(slot, head);
        head = slot;
    }
    free_slot[bin] = head;
    s->next = nullptr;
    s->shadow = 0;
    small_allocs[bin]++;
    count_alloc(slot_size);
    return s;
}

void Heap::check_slot(void* p, uint32_t info) const {
    if (!is_slot_start(offset_in_run(reinterpret_cast<uintptr_t>(p), info), small_bin(info)))
        misuse(Misuse::interior_pointer, p);
    if (holds_link(p)) misuse(Misuse::double_free, p);
}

void Heap::free_small(void* p, uint32_t info) {
    check_slot(p, info);
    push_free(static_cast<Free_slot*>(p), small_bin(info));
}

// ============================================================================
// Huge
// ============================================================================

// Maps a header page and, after it, `len` bytes aligned to `alignment`:
// enough is mapped that they fit, then the slack on both sides goes back.
// Returns the header page, nullptr if the OS refused.
static char* map_huge_span(size_t len, size_t alignment) {
    size_t span = len + alignment;
    char* base = static_cast<char*>(os::map_heap(span));
    if (!base) return nullptr;
    uintptr_t b = reinterpret_cast<uintptr_t>(base);
    uintptr_t block = (b + k_page_size + alignment - 1) & ~(uintptr_t{alignment} - 1);
    char* header_page = reinterpret_cast<char*>(block - k_page_size);
    if (header_page > base) os::unmap_heap(base, static_cast<size_t>(header_page - base));
    char* end = reinterpret_cast<char*>(block + len);
    if (end < base + span) os::unmap_heap(end, static_cast<size_t>(base + span - end));
    return header_page;
}

void* Heap::alloc_huge(size_t bytes, size_t alignment, bool use_cache) {
    if (bytes > SIZE_MAX - 2 * k_chunk_size - alignment) {
        errno = ENOMEM;
        return nullptr;
    }
    size_t len = round_pages(bytes);
    if (alignment < k_chunk_size) alignment = k_chunk_size;
    // A cached mapping first. Before a new one: the huge blocks other
    // threads freed wait on the remote stack (until a bin of this heap runs
    // dry, else), mapped; drained, they are cached.
    for (bool drained = false;; drained = true) {
        if (alignment == k_chunk_size && use_cache)
            if (Huge_header* h = take_cached_huge(len)) return h->block();
        if (drained || !has_remote_stack()) break;
        drain_remote_stacks();
    }
    if (!grow_real(len + k_page_size)) return nullptr;
    char* header_page = map_huge_span(len, alignment);
    if (!header_page) {
        collect_for_os();
        header_page = map_huge_span(len, alignment);
        if (!header_page) {
            errno = ENOMEM;
            return nullptr;
        }
    }
    // (The header page too: advice on the block alone would split the
    // mapping in two, and mremap could no longer grow it in place.)
    if (!g_tuning.huge_pages) os::advise_no_huge_pages(header_page, len + k_page_size);

    Huge_header* h = reinterpret_cast<Huge_header*>(header_page);
    h->magic = k_huge_magic;
    h->heap = this;
    h->map_base = header_page;
    h->map_size = len + k_page_size;
    count_real(h->map_size);
    link_huge(h, len);
    return h->block();
}

void Heap::link_huge(Huge_header* h, size_t len) {
    h->size = len;
    h->prev = nullptr;
    h->next = huge;
    if (huge) huge->prev = h;
    huge = h;
    registry_mark(h->block(), len, granule_huge);
    ++huge_allocs;
    huge_bytes += len;
    bytes_allocated_slow += len;
    count_alloc(len);
}

// A freed huge mapping of about the right size, kept resident: reusing it
// costs no mmap and no page faults (ZendMM never caches huge blocks; a
// program that allocates and frees a few MiB in a loop would fault on every
// page each time). Cached mappings count as dirty memory.
Huge_header* Heap::take_cached_huge(size_t len) {
    Huge_header** link = &huge_cache;
    Huge_header** smaller = nullptr;  // the biggest cached one under len
    for (Huge_header* h = huge_cache; h; link = &h->next, h = h->next) {
        size_t usable = h->map_size - k_page_size;
        if (usable < len) {
            if (usable >= len / 2 && (!smaller || usable > (*smaller)->map_size - k_page_size)) smaller = link;
            continue;
        }
        if (usable > 2 * len) continue;
        // Held once taken: past the limit, the fresh path's (its collect
        // gives the cache back, and the limit's handler is asked once).
        if (!fits_limit(h->map_size)) return nullptr;
        *link = h->next;
        huge_cache_pages -= h->map_size / k_page_size;
        note_held();
        // The whole mapping is kept, its tail beyond the block resident and
        // unused: giving it back here and faulting it in again when a bigger
        // block takes the mapping next (sizes of a few MiB drawn at random)
        // cost a page fault for every page of difference, every time.
        link_huge(h, len);
        forget_remote_link(h->block());
        return h;
    }
    if (!smaller) return nullptr;
    // Too small, but its pages are resident: grow the mapping (in place, or
    // moved by mremap), so that only the new part faults. It is counted
    // once it holds the block, never as a block of its old size too.
    Huge_header* h = *smaller;
    const size_t more = len + k_page_size - h->map_size;
    // Past the limit: not here (the fresh mapping's path collects, and asks
    // the limit's handler once). The whole mapping is held once taken.
    if (!fits_limit(len + k_page_size)) return nullptr;
    *smaller = h->next;
    huge_cache_pages -= h->map_size / k_page_size;
    auto back_to_cache = [&] {  // as it was: the fresh path serves the block
        h->next = huge_cache;
        huge_cache = h;
        huge_cache_pages += h->map_size / k_page_size;
        return nullptr;
    };
    const os::Remap grown = os::remap_in_place(h->map_base, h->map_size, h->map_size + more);
    if (grown == os::Remap::refused) return back_to_cache();  // (a mapping the program split)
    if (grown == os::Remap::no_room) {
        // Moved, header page and all, to a fresh aligned span. The registry
        // forgets the old place first: once it is unmapped another thread
        // may map (and register) a block there.
        char* to = map_huge_span(len, k_chunk_size);
        void* old_block = h->block();
        registry_clear(old_block, k_page_size, granule_huge_unmapped);
        if (!to || !os::remap_to(h->map_base, h->map_size, to, len + k_page_size)) {
            if (to) os::unmap_heap(to, len + k_page_size);
            registry_clear(old_block, k_page_size, granule_huge_freed);
            return back_to_cache();
        }
        h = reinterpret_cast<Huge_header*>(to);
        h->map_base = to;
    }
    h->map_size = len + k_page_size;
    count_real(more);
    link_huge(h, len);
    forget_remote_link(h->block());
    return h;
}

void Heap::free_huge(Huge_header* h) {
    if (h->prev)
        h->prev->next = h->next;
    else
        huge = h->next;
    if (h->next) h->next->prev = h->prev;
    count_free(h->size);
    huge_bytes -= h->size;
    freed_bytes_large_huge += h->size;
    size_t pages = h->map_size / k_page_size;
    const bool cached = pages <= g_tuning.dirty_budget_pages && h->map_base + k_page_size == h->block();
    registry_clear(h->block(), h->size, cached ? granule_huge_freed : granule_huge_unmapped);
    if (cached) {
        h->next = huge_cache;
        h->aged = false;
        huge_cache = h;
        huge_cache_pages += pages;
        maybe_purge();
        return;
    }
    lower_real(h->map_size);
    unmapped_bytes += h->map_size;
    os::unmap_heap(h->map_base, h->map_size);
}

// Huge blocks are found through the registry (O(1)), then their header is
// checked; anything that does not check out is not a block zmm handed out.
static Huge_header* huge_header_checked(const void* p) {
    if (reinterpret_cast<uintptr_t>(p) & (k_chunk_size - 1)) return nullptr;
    if (granule_of(p) != granule_huge) return nullptr;
    Huge_header* h = Huge_header::of(p);
    if (h->magic != k_huge_magic) panic("heap corrupted: huge block header overwritten");
    return h;
}

void* Heap::realloc_huge(Huge_header* h, size_t bytes) {
    if (bytes > SIZE_MAX - 4 * k_chunk_size) {  // no such mapping; and round_pages would wrap
        errno = ENOMEM;
        return nullptr;
    }
    size_t len = round_pages(bytes);
    void* block = h->block();
    if (len == h->size) return block;
    // A mapping taken from the cache may extend beyond the block (its slack).
    char* map_end = h->map_base + h->map_size;
    if (len < h->size) {
        // Shrink in place: give back the tail, slack included (ZendMM).
        char* tail = static_cast<char*>(block) + len;
        size_t cut = static_cast<size_t>(map_end - tail);
        registry_clear(block, h->size, granule_huge);
        registry_mark(block, len, granule_huge);
        count_free(h->size - len);
        huge_bytes -= h->size - len;
        // The header says what stays mapped before the tail goes: a fork
        // meanwhile leaves the child this heap as an orphan, whose leak
        // scan reads h->size bytes of the block.
        h->size = len;
        h->map_size -= cut;
        std::atomic_signal_fence(std::memory_order_seq_cst);
        os::unmap_heap(tail, cut);
        lower_real(cut);
        unmapped_bytes += cut;
        return block;
    }
    size_t grow = len - h->size;
    size_t slack = h->map_size - k_page_size - h->size;
    size_t more = grow > slack ? grow - slack : 0;  // beyond the mapping
    if (more && !grow_real(more)) return nullptr;
    const os::Remap grown = more ? os::remap_in_place(h->map_base, h->map_size, h->map_size + more) : os::Remap::done;
    if (grown == os::Remap::done) {
        h->size = len;
        h->map_size += more;
        registry_mark(block, len, granule_huge);
        count_real(more);
        count_alloc(grow);
        huge_bytes += grow;
        bytes_allocated_slow += grow;
        return block;
    }
    // Move the pages, not the bytes: a new aligned mapping, then mremap the
    // old block over it; the bytes, of a mapping the kernel refused to grow
    // for another reason than room (split by the program: remap_in_place).
    void* fresh = alloc_huge(len, k_chunk_size, false);
    if (!fresh) return nullptr;
    // The registry forgets the old range before mremap gives it back: once
    // it is unmapped another thread may map (and register) a block there.
    if (may_be_in_table(block)) forget(block);  // gone from here on, as a free
    registry_clear(block, h->size, granule_huge_unmapped);
    if (grown == os::Remap::refused || !os::remap_to(block, h->size, fresh, len)) {
        registry_mark(block, h->size, granule_huge);
        memcpy(fresh, block, h->size);
    } else {
        // The old block's pages are gone; what stays mapped is its header.
        count_free(h->size);
        huge_bytes -= h->size;
        freed_bytes_large_huge += h->size;
        lower_real(h->map_size);
        if (h->prev)
            h->prev->next = h->next;
        else
            huge = h->next;
        if (h->next) h->next->prev = h->prev;
        char* rest = static_cast<char*>(block) + h->size;  // the slack, if any
        os::unmap_heap(h->map_base, k_page_size);         // h is gone from here
        if (rest < map_end) os::unmap_heap(rest, static_cast<size_t>(map_end - rest));
        return fresh;
    }
    free_huge(h);
    return fresh;
}

// ============================================================================
// Public entry points
// ============================================================================

void* Heap::alloc(size_t bytes) {
    requesting = bytes;
    if (bytes <= k_max_small) return alloc_small(size_to_bin(bytes), bytes);
    if (bytes <= k_max_large) return alloc_large(bytes);
    return alloc_huge(bytes, k_chunk_size);
}

void* Heap::alloc_zeroed(size_t bytes) {
    requesting = bytes;
    if (bytes <= k_max_small) {
        void* p = alloc(bytes);
        if (p) memset(p, 0, bytes);
        return p;
    }
    if (bytes <= k_max_large) {
        // Pages never written (or purged) since they were mapped are not
        // cleared again: a large table calloc'd and used sparsely faults in
        // only what it uses, as with glibc's fresh memory.
        bool zeroed = false;
        void* p = alloc_large(bytes, &zeroed);
        if (p && !zeroed) memset(p, 0, bytes);
        return p;
    }
    if (bytes > SIZE_MAX - 4 * k_chunk_size) {
        errno = ENOMEM;
        return nullptr;
    }
    if (Huge_header* h = take_cached_huge(round_pages(bytes))) {
        memset(h->block(), 0, h->size);
        return h->block();
    }
    // A fresh mapping reads as zero; not the cache again: a cached mapping
    // too small to grow just now (a limit) may grow on a second try, after
    // the first one's collect, and would come back written.
    return alloc_huge(bytes, k_chunk_size, false);
}

void* Heap::alloc_aligned(size_t alignment, size_t bytes) {
    if (bytes == 0) bytes = 1;  // a block of its own, as malloc(0): never a run of 0 pages
    requesting = bytes;
    if (alignment <= k_min_alignment) return alloc(bytes);
    if (bytes <= k_max_small && alignment <= 2048) {
        // A slot of a page-aligned run is aligned to the largest power of two
        // dividing its size; pick the smallest bin that is a multiple.
        size_t want = bytes < alignment ? alignment : bytes;
        for (unsigned b = size_to_bin(want); b < k_bins; ++b)
            if (k_bin_size[b] % alignment == 0) return alloc_small(b, bytes);
    }
    if (alignment < k_chunk_size && bytes <= k_max_large) {
        unsigned count = static_cast<unsigned>(round_pages(bytes) / k_page_size);
        unsigned align_pages = static_cast<unsigned>(alignment / k_page_size);
        if (align_pages <= 1) return alloc_large(bytes);
        if (count + align_pages <= k_chunk_pages) {
            Chunk* c;
            char* p = static_cast<char*>(alloc_pages(count, align_pages, &c));
            if (!p) return nullptr;
            unsigned page = Chunk::page_of(p);
            c->map[page] = k_large | count;
            for (unsigned i = 1; i < count; ++i) c->map[page + i] = k_large_tail | i;
            forget_remote_link(p);
            ++large_allocs;
            bytes_allocated_slow += size_t{count} * k_page_size;
            count_alloc(size_t{count} * k_page_size);
            return p;
        }
    }
    return alloc_huge(bytes < k_max_large + 1 ? k_max_large + 1 : bytes, alignment);
}

// p is a chunk's own address (its header page): no block's. A second free
// of the huge block whose mapping became the chunk, or a foreign pointer.
[[noreturn]] static void chunk_address_freed(const Chunk* c, void* p) {
    misuse(c->was_huge_block ? Misuse::double_free : Misuse::unknown_pointer, p);
}

// A copy of the header of the live huge block whose span (granule huge or
// tail) p may be in, and the block's start; nullptr if the registry names
// no start, or the header cannot be read or does not check out. Read as a
// copy: p is not a block zmm handed out (a free of glibc's pointer, a
// misuse), and another thread may free the huge block and unmap its header
// meanwhile. `held`: the heaps' mappings are held (os::hold_heap_mappings,
// a leak scan): the header is read directly.
static const char* live_huge_header(const void* p, Huge_header* out, bool held = false) {
    const void* start = registry_huge_start(p);
    if (!start) return nullptr;
    const Huge_header* h = Huge_header::of(start);
    if (held)
        *out = *h;
    else if (!os::copy_mapped(out, h, sizeof *out))
        return nullptr;
    return out->magic == k_huge_magic ? static_cast<const char*>(start) : nullptr;
}

// Validates p as the start of a live zmm block, diagnosing (and not
// returning) when it is not: used where a bad pointer must be caught before
// it is queued (remote frees) or trusted.
static void check_block_start(void* p) {
    Granule g = granule_of(p);
    bool chunk_aligned = (reinterpret_cast<uintptr_t>(p) & (k_chunk_size - 1)) == 0;
    if (g == granule_chunk) {
        Chunk* c = Chunk::of(p);
        unsigned page = Chunk::page_of(p);
        uint32_t info = c->map[page];
        if (page == 0) chunk_address_freed(c, p);
        if (info & k_small) {
            unsigned bin = small_bin(info);
            if (!is_slot_start(offset_in_run(reinterpret_cast<uintptr_t>(p), info), bin)) misuse(Misuse::interior_pointer, p);
            return;
        }
        if (page_aligned(p) && (info & k_large)) return;
        if (page_aligned(p) && info == k_large_freed) misuse(Misuse::double_free, p);
        // (k_large: past a run's start, in its first page)
        if (info & (k_large_tail | k_large)) misuse(Misuse::interior_pointer, p);
        misuse(Misuse::unknown_pointer, p);
    }
    if (g == granule_huge && chunk_aligned) return;
    if ((g == granule_huge_freed || g == granule_huge_unmapped) && chunk_aligned)
        misuse(Misuse::double_free, p);
    if (g == granule_huge || g == granule_huge_tail) {
        Huge_header h;
        const char* start = live_huge_header(p, &h);
        if (start && static_cast<const char*>(p) < start + h.size) misuse(Misuse::interior_pointer, p);
    }
    misuse(Misuse::unknown_pointer, p);
}

void Heap::free_owned(void* p) {
    if (may_be_in_table(p)) forget(p);
    Granule g = granule_of(p);
    // A large or huge block that holds a link waits on a remote stack, freed
    // already by another thread (as free_small's test for a slot): freed
    // here too, its pages would be freed twice.
    if (g == granule_chunk) {
        Chunk* c = Chunk::of(p);
        unsigned page = Chunk::page_of(p);
        uint32_t info = c->map[page];
        if (page == 0) chunk_address_freed(c, p);
        if (info & k_small) return free_small(p, info);
        if (page_aligned(p)) {
            if (info & k_large) {
                if (holds_link(p)) misuse(Misuse::double_free, p);
                return free_large(c, page, info & k_pages_mask);
            }
            if (info == k_large_freed) misuse(Misuse::double_free, p);
        }
        // (k_large: past a run's start, in its first page)
        if (info & (k_large_tail | k_large)) misuse(Misuse::interior_pointer, p);
        misuse(Misuse::unknown_pointer, p);
    }
    if (Huge_header* h = huge_header_checked(p)) {
        if (holds_link(p)) misuse(Misuse::double_free, p);
        return free_huge(h);
    }
    check_block_start(p);
    misuse(Misuse::unknown_pointer, p);
}

// A block that came off the remote stack: it was checked when pushed, and its
// second word now holds a valid shadow (the remote link's).
void Heap::free_owned_unchecked(void* p) {
    if (g_tuning.check_remote_frees) debug_checks::on_drained(*this, p);
    if (may_be_in_table(p)) forget(p);
    if (granule_of(p) == granule_chunk) {
        Chunk* c = Chunk::of(p);
        unsigned page = Chunk::page_of(p);
        uint32_t info = c->map[page];
        if (info & k_small) return push_free(static_cast<Free_slot*>(p), small_bin(info));
        return free_large(c, page, info & k_pages_mask);
    }
    free_huge(Huge_header::of(p));
}

void Heap::forget(void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    Block_info was;
    if (!blocks->erase(a, &was) || !(was.flags & k_block_carried)) return;
    unmark_carried(a);
    // Not the running request's bytes: its usage and peak (net of
    // base_size) stay as they were once the free below lowers the usage.
    // Outside a request the heap's peak is the process's: it stays.
    if (!request) return;
    size_t bytes = usable_size(p);
    base_size -= bytes < base_size ? bytes : base_size;
    // Its room is the request's now: held memory it reuses counts (and
    // the held peak, net of the base, stays).
    const size_t cut_real = bytes < limit_base ? bytes : limit_base;
    limit_base -= cut_real;
    held_peak -= cut_real < held_peak ? cut_real : held_peak;
    const size_t cut = bytes < peak ? bytes : peak;
    peak -= cut;
    under_peak -= static_cast<int64_t>(cut);  // (the usage stays)
    if (is_chunk_granule(a)) {
        uint32_t info = Chunk::of(p)->map[Chunk::page_of(p)];
        if (info & k_small) --carried_small[small_bin(info)];
    }
}

void Heap::mark_carried(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (!is_chunk_granule(a)) return;  // huge: its free takes the slow path anyway
    Chunk* c = Chunk::of(p);
    if (c->heap != this) return;
    unsigned page = Chunk::page_of(p);
    uint32_t& info = c->map[page];
    if (!(info & k_small)) return;  // large: as huge
    if (!c->has_carried) {
        c->carried_bits = carried_bits_pool::take();
        c->has_carried = true;
    }
    if (c->carried_bits) c->carried_bits[Chunk::carried_word(a)] |= Chunk::carried_mask(a);
    info = with_slow_free(info);
}

void Heap::unmark_carried(uintptr_t a) {
    if (!is_chunk_granule(a)) return;
    Chunk* c = Chunk::of(reinterpret_cast<void*>(a));
    unsigned page = Chunk::page_of(reinterpret_cast<void*>(a));
    uint32_t& info = c->map[page];
    if (!(info & k_small) || !(info & k_small_slow_free)) return;
    if (!c->carried_bits) return;  // nothing to count with: marked for good
    c->carried_bits[Chunk::carried_word(a)] &= ~Chunk::carried_mask(a);
    const uint64_t* bits = c->carried_bits + size_t{page} * Chunk::k_carried_words;
    for (unsigned w = 0; w < Chunk::k_carried_words; ++w)
        if (bits[w]) return;
    info = without_slow_free(info);
}

void Heap::drop_carried(Chunk* c) {
    if (!c->has_carried) return;
    for (unsigned p = 1; p < k_chunk_pages; ++p)
        if (c->map[p] & k_small) c->map[p] = without_slow_free(c->map[p]);
    if (c->carried_bits) carried_bits_pool::give(c->carried_bits);
    c->carried_bits = nullptr;
    c->has_carried = false;
}

bool Heap::is_carried(const void* p) const {
    if (!blocks) return false;
    if (Carried_mark m = carried_mark(p); m != k_ask_table) return m == k_carried;
    const Block_info* b = blocks->find(reinterpret_cast<uintptr_t>(p));
    return b && (b->flags & k_block_carried);
}

bool Heap::size_matches(const void* p, size_t bytes) {
    size_t usable = usable_size(p);
    if (usable == 0) return true;  // not a block start: the free diagnoses it
    if (bytes > usable) return false;
    if (in_small_run(p)) return bytes <= k_max_small && k_bin_size[size_to_bin(bytes)] == usable;
    // Large and huge: the same page count (an aligned new may have rounded up
    // to more; only a size beyond the block or far below it is wrong).
    return bytes > k_max_small && (bytes + k_page_size - 1) / k_page_size * k_page_size >= usable / 2;
}

Heap* Heap::owner_of(const void* p) {
    Granule g = granule_of(p);
    if (g == granule_chunk) return Chunk::of(p)->heap;
    if (Huge_header* h = huge_header_checked(p)) return h->heap;
    return nullptr;
}

namespace {
// p, a block start of `to`'s: a double free if its slot is free already.
Free_slot* not_free_already(const Heap* to, void* p) {
    if (to->holds_link(p)) misuse(Misuse::double_free, p);
    return static_cast<Free_slot*>(p);
}

// p, about to go onto another heap's stack: diagnosed unless it is the
// start of one of `to`'s live blocks.
Free_slot* checked_for_remote(const Heap* to, void* p) {
    check_block_start(p);
    return not_free_already(to, p);
}

// Pushes the linked blocks first .. last onto `stack`, one of `to`'s.
// The first block pushed onto the empty stack links to `bottom`.
void push_chain(std::atomic<Free_slot*>& stack, const Heap* to, Free_slot* first, Free_slot* last,
                Free_slot* bottom) {
    Free_slot* head = stack.load(std::memory_order_relaxed);
    do {
        Free_slot* next = head ? head : bottom;
        last->next = next;
        last->shadow = to->shadow_of(last, next);
    } while (!stack.compare_exchange_weak(head, first, std::memory_order_release, std::memory_order_relaxed));
}
}  // namespace

void Heap::free_remote(Heap* owner_heap, void* p) {
    Free_slot* s = checked_for_remote(owner_heap, p);
    push_chain(owner_heap->remote, owner_heap, s, s, nullptr);
}

Heap* Heap::free_any(void* p, const void* current_owner, Heap* outbox) {
    Heap* h = owner_of(p);
    if (!h) {
        if (!claims(p)) return nullptr;
        check_block_start(p);  // a freed huge block, or inside a live one: diagnosed
        return nullptr;
    }
    free_block_of(h, p, current_owner, outbox);
    return h;
}

void Heap::free_block_of(Heap* h, void* p, const void* current_owner, Heap* outbox) {
    const void* owner = h->owner.load(std::memory_order_relaxed);
    if (owner == current_owner) {
        h->free_owned(p);
    } else if (outbox && h->takes_chains && owner && g_tuning.batch_remote_frees) {
        // (A heap made before ZMM_DEBUG was read takes chains: the tuning says.)
        outbox->free_through_outbox(h, p);
    } else {
        free_remote(h, p);
        // Its thread is gone: drained now, not when a new thread adopts it.
        if (!owner) heap_pool::reclaim_if_abandoned(h, current_owner);
    }
}

inline void Heap::free_slot_through_outbox(Heap* to, void* p, unsigned bin) {
    Free_slot* s = not_free_already(to, p);
    Outbox_chain& o = outbox[bin];
    if (__builtin_expect(o.to != to, 0)) return restart_chain(o, bin, to, s);
    if (append_to_chain(o, bin, s, to->key)) send_chain(o, bin);
}

void Heap::free_through_outbox(Heap* to, void* p) {
    // A small slot's start (the common case, checked once here), else the
    // general check and the remote stack.
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uint32_t info = is_chunk_granule(a) && Chunk::page_of(p) != 0 ? Chunk::of(p)->map[Chunk::page_of(p)] : 0;
    const unsigned bin = small_bin(info);
    if (!(info & k_small) || !is_slot_start(offset_in_run(a, info), bin)) return free_remote(to, p);
    free_slot_through_outbox(to, p, bin);
}

void Heap::free_in_chunk_of_other(void* p, const void* current_owner, Heap* outbox) {
    if (outbox)
        if (int r = outbox->try_free_to_outbox(p, current_owner); r >= 0) {
            if (r > 0) outbox->send_outbox_chain(static_cast<unsigned>(r - 1));
            return;
        }
    Heap* to = Chunk::of(p)->heap;
    if (to->owner.load(std::memory_order_relaxed) == current_owner)
        return to->free_owned(p);  // (a traced request's blocks)
    free_block_of(to, p, current_owner, outbox);
}

// Apart, so that free_slot_through_outbox's main line calls nothing but its
// tail calls (and saves no registers).
__attribute__((noinline)) void Heap::restart_chain(Outbox_chain& o, unsigned bin, Heap* to, Free_slot* s) {
    if (o.head) send_chain(o, bin);
    o.to = to;
    if (append_to_chain(o, bin, s, to->key)) send_chain(o, bin);
}

void Heap::send_chain(Outbox_chain& o, unsigned bin) {
    // The outbox forgets the chain first: a signal handler that leaves this
    // by siglongjmp (the thread is busy, its frees go elsewhere) loses a
    // chain at worst, never pushes one twice.
    Heap* to = o.to;
    Free_slot* first = o.head;
    Free_slot* last = o.tail;
    uint32_t count = o.count;
    o.head = o.tail = nullptr;
    o.count = 0;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    to->remote_bins[bin].blocks.fetch_add(count, std::memory_order_relaxed);
    push_chain(to->remote_bins[bin].chains, to, first, last, k_list_end);  // (a bin's list, once taken)
    // Its thread left since the chain began: taken now, not when a new
    // thread adopts the heap (as a direct free into it would be).
    if (to->owner.load(std::memory_order_relaxed) == nullptr)
        heap_pool::reclaim_if_abandoned(to, owner.load(std::memory_order_relaxed));
}

void Heap::flush_outbox() {
    for (unsigned b = 0; b < k_bins; ++b)
        if (outbox[b].head) send_chain(outbox[b], b);
}

unsigned Heap::outbox_chains() const {
    unsigned n = 0;
    for (const Outbox_chain& o : outbox) n += o.head != nullptr;
    return n;
}

void Heap::take_remote_chains(unsigned bin) {
    Free_slot* list = remote_bins[bin].chains.exchange(nullptr, std::memory_order_acquire);
    uint32_t n = remote_bins[bin].blocks.exchange(0, std::memory_order_relaxed);
    count_free(size_t{n} * bin_size[bin]);
    small_frees[bin] += n;
    if (!list) return;
    // (The chains end with k_list_end, as the bin's list does.)
    if (Free_slot* head = free_slot[bin]; head != k_list_end) {  // (full drains only: the slow path takes an empty bin's)
        Free_slot* tail = list;
        while (tail->next != k_list_end) tail = checked_next(tail);
        tail->next = head;
        tail->shadow = shadow_of(tail, head);
    }
    free_slot[bin] = list;
}

// Each block goes to the heap that owns it now: a block pushed onto a
// request heap's stack may belong to the persistent heap by the time it is
// drained (the request ended and its chunks were merged).
void Heap::drain_stack(Free_slot* s) {
    while (s) {
        Free_slot* next = s->next;
        Heap* h = granule_of(s) == granule_chunk ? Chunk::of(s)->heap : Huge_header::of(s)->heap;
        h->free_owned_unchecked(s);
        s = next;
    }
}

namespace {
// Rewrites the shadows of a free list from `old_key` to `new_key`.
void rekey_list(Free_slot* s, uint64_t old_key, uint64_t new_key) {
    while (s && s != k_list_end) {
        Free_slot* next = s->next;
        if (s->shadow != Heap::shadow_with(old_key, s, next)) return;
        s->shadow = Heap::shadow_with(new_key, s, next);
        s = next;
    }
}
}  // namespace

void Heap::rekey(uint64_t new_key) {
    for (unsigned b = 0; b < k_bins; ++b) {
        rekey_list(free_slot[b], key, new_key);
        rekey_list(remote_bins[b].chains.load(std::memory_order_acquire), key, new_key);
        // (Chains to an orphan, which keeps the old key, are never taken.)
        rekey_list(outbox[b].head, key, new_key);
    }
    rekey_list(remote.load(std::memory_order_acquire), key, new_key);
    key = new_key;
}

void Heap::drain_remote() {
    for (unsigned b = 0; b < k_bins; ++b)
        if (remote_bins[b].chains.load(std::memory_order_relaxed)) take_remote_chains(b);
    drain_remote_stacks();
}

void Heap::drain_remote_stacks() {
    // (A load first: no read-modify-write of an empty stack.)
    if (remote.load(std::memory_order_relaxed)) drain_stack(remote.exchange(nullptr, std::memory_order_acquire));
    for (Heap* r = retired; r; r = r->retired_next)
        if (r->remote.load(std::memory_order_relaxed)) drain_stack(r->remote.exchange(nullptr, std::memory_order_acquire));
}

size_t Heap::live_block_size(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    switch (granule_of(p)) {
        case granule_chunk: {
            Chunk* c = Chunk::of(p);
            unsigned page = Chunk::page_of(p);
            if (page == 0) return 0;
            uint32_t m = c->map[page];
            if (m & k_small) {
                unsigned bin = small_bin(m);
                if (!zmm::is_slot_start(offset_in_run(a, m), bin)) return 0;
                if (c->heap->holds_link(p)) return 0;  // free
                return k_bin_size[bin];
            }
            // A page run or a huge block that holds a link waits on its
            // heap's remote stack: another thread freed it (after the
            // request's end drained the stack, before the scan: it was
            // reported lost).
            if ((m & k_large) && page_aligned(p)) return c->heap->holds_link(p) ? 0 : size_t{m & k_pages_mask} * k_page_size;
            return 0;
        }
        case granule_huge: {
            if (a & (k_chunk_size - 1)) return 0;
            const Huge_header* h = Huge_header::of(p);
            return h->magic == k_huge_magic && !h->heap->holds_link(p) ? h->size : 0;
        }
        default:
            return 0;
    }
}

void Heap::for_each_stale_huge_range(void (*fn)(void*, uintptr_t, uintptr_t), void* ctx) const {
    size_t k = 0;
    for (const Huge_header* c = huge_cache; c && k < 4096; c = c->next, ++k) {
        if (granule_of(reinterpret_cast<const char*>(c) + k_page_size) != granule_huge_freed || c->magic != k_huge_magic)
            break;
        uintptr_t lo = reinterpret_cast<uintptr_t>(c->map_base);
        fn(ctx, lo, lo + c->map_size);
    }
    k = 0;
    for (const Huge_header* c = huge; c && k < (size_t{1} << 20); c = c->next, ++k) {
        if (c->magic != k_huge_magic) break;
        uintptr_t lo = reinterpret_cast<uintptr_t>(c) + k_page_size + c->size;
        uintptr_t hi = reinterpret_cast<uintptr_t>(c->map_base) + c->map_size;
        if (lo < hi) fn(ctx, lo, hi);
    }
}

namespace {
// The end of the live huge block's mapping whose granule (huge or tail) p
// is in; false if the registry names no start (a neighbour's registration
// in the middle of its marking or clearing) or the header does not check out.
bool huge_mapping_end(const void* p, uintptr_t* end, bool held) {
    Huge_header h;
    if (!live_huge_header(p, &h, held)) return false;
    *end = reinterpret_cast<uintptr_t>(h.map_base) + h.map_size;
    return true;
}
}  // namespace

uintptr_t Heap::heap_memory_end(const void* p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uintptr_t granule_end = (a | (k_chunk_size - 1)) + 1;
    switch (granule_of(p)) {
        case granule_chunk:
            return granule_end;
        case granule_huge:
        case granule_huge_tail: {
            uintptr_t end;
            if (!huge_mapping_end(p, &end, true)) return granule_end;  // (the scan skips what it cannot tell)
            return end > a ? end : a;
        }
        default:
            return a;
    }
}

void Heap::diagnose_not_a_block(void* p) {
    check_block_start(p);
    misuse(Misuse::unknown_pointer, p);  // (a block made there since: the realloc's pointer was none)
}

bool Heap::claims(const void* p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    switch (granule_of(p)) {
        case granule_chunk:
        case granule_huge_freed:
            return true;
        case granule_huge_unmapped:
            return (a & (k_chunk_size - 1)) == 0 && !foreign_block_at_freed_huge_start(p);
        case granule_huge:
        case granule_huge_tail: {
            uintptr_t end;
            return huge_mapping_end(p, &end, false) && a < end;
        }
        default:
            return false;
    }
}

size_t Heap::usable_size(const void* p) {
    Granule g = granule_of(p);
    if (g == granule_chunk) {
        Chunk* c = Chunk::of(p);
        unsigned page = Chunk::page_of(p);
        uint32_t info = c->map[page];
        if (info & k_small) return k_bin_size[small_bin(info)];
        if ((info & k_large) && page != 0 && page_aligned(p)) return size_t{info & k_pages_mask} * k_page_size;
        return 0;
    }
    if (Huge_header* h = huge_header_checked(p)) return h->size;
    return 0;
}

bool Heap::in_small_run(const void* p) {
    return granule_of(p) == granule_chunk && (Chunk::of(p)->map[Chunk::page_of(p)] & k_small);
}

void* Heap::realloc(void* p, size_t bytes) {
    // Only a heap with a table asks, whose own block p must be first
    // (another heap's block is never in this table, and its page and
    // carried bits are its owner's to change meanwhile).
    const Block_info* b = p && blocks && owner_of(p) == this && may_be_in_table(p)
                              ? blocks->find(reinterpret_cast<uintptr_t>(p))
                              : nullptr;
    if (!b || !(b->flags & k_block_carried)) return realloc_block(p, bytes);
    // A carried block is not the running request's memory, nor is what it
    // grows or shrinks by in place: base_size and peak move with it, so
    // that the request's usage and peak stay. (Moved, the old block's free
    // has made the table forget it.)
    size_t before = usable_size(p), peak_before = peak;
    void* q = realloc_block(p, bytes);
    if (q == p && request) {  // (outside a request the heap's peak is the process's)
        size_t after = usable_size(p);
        base_size += after - before;  // modulo 2^64: a shrink lowers both
        // The usage is what the realloc left (remote frees drained on the
        // way, a limit handler's allocations count); the peak moves by the
        // block's change only.
        const size_t now = usage();
        peak = peak_before + (after - before);
        under_peak = static_cast<int64_t>(peak - now);
    }
    return q;
}

void* Heap::realloc_small_move(Free_slot* s, unsigned bin, unsigned want, size_t size) {
    void* q = pop_small(want);
    if (!q) return nullptr;
    size_t old = bin_size[bin];
    memcpy(q, s, old < size ? old : size);
    push_free(s, bin);
    return q;
}

void* Heap::realloc_block(void* p, size_t bytes) {
    requesting = bytes;
    Granule g = granule_of(p);
    if (g == granule_chunk && Chunk::of(p)->heap == this) {
        Chunk* c = Chunk::of(p);
        unsigned page = Chunk::page_of(p);
        uint32_t info = c->map[page];
        const bool large_start = !(info & k_small) && (info & k_large) && page_aligned(p) && page != 0;
        // A large or huge block that holds a link: freed already by another
        // thread, on its way back (free_owned's test).
        if (large_start && holds_link(p)) misuse(Misuse::double_free, p);
        if (info & k_small) {
            unsigned bin = small_bin(info);
            check_slot(p, info);
            // Stay in place if the block still fits and would not fit a
            // smaller bin (ZendMM).
            if (bytes <= k_max_small && size_to_bin(bytes) == bin) return p;
            // Move (the commonest realloc: a string or array grows).
            void* fresh = alloc(bytes);
            if (!fresh) return nullptr;
            const size_t old = k_bin_size[bin];
            memcpy(fresh, p, old < bytes ? old : bytes);
            if (may_be_in_table(p)) forget(p);
            free_small(p, c->map[page]);  // (checked again: the allocation may have run a limit handler)
            return fresh;
        } else if (large_start && bytes > k_zendmm_max_small && bytes <= k_max_large) {
            // (Down to ZendMM's largest bin a run stays a run, in place, as
            // in ZendMM: zmm's larger bins would cost a copy.)
            unsigned count = info & k_pages_mask;
            unsigned want = static_cast<unsigned>(round_pages(bytes) / k_page_size);
            if (want == count) return p;
            if (want < count) {
                // Shrink in place: the tail pages become free.
                c->map[page] = k_large | want;
                for (unsigned i = want; i < count; ++i) c->map[page + i] = 0;
                dirty_pages += c->mark_free(page + want, count - want);
                count_free(size_t{count - want} * k_page_size);
                return p;
            }
            if (c->pages_free(page + count, want - count)) {
                dirty_pages -= c->mark_used(page + count, want - count);
                c->map[page] = k_large | want;
                for (unsigned i = count; i < want; ++i) c->map[page + i] = k_large_tail | i;
                count_alloc(size_t{want - count} * k_page_size);
                bytes_allocated_slow += size_t{want - count} * k_page_size;
                return p;
            }
        }
    } else if (Huge_header* h = huge_header_checked(p); h && h->heap == this && bytes > k_max_large) {
        if (holds_link(p)) misuse(Misuse::double_free, p);
        return realloc_huge(h, bytes);
    }
    size_t old = usable_size(p);
    if (old == 0) {
        // not a block start zmm knows: let free_owned say why
        free_owned(p);
        return nullptr;
    }
    void* fresh = alloc(bytes);
    if (!fresh) return nullptr;
    memcpy(fresh, p, old < bytes ? old : bytes);
    Heap* h = owner_of(p);
    if (h == this)
        free_owned(p);
    else
        free_any(p, owner.load(std::memory_order_relaxed));
    return fresh;
}

// ============================================================================
// Returning memory
// ============================================================================

// Wholly free small runs (ZendMM's zend_mm_gc): one walk over the free
// lists counts the free slots of every run (per-chunk tallies in scratch
// memory, chunk->num as the index), a second unlinks the slots of runs whose
// slots are all free, then their pages are freed and chunks left empty are
// released. O(free slots + chunks).
size_t Heap::collect_small_runs() {
    size_t n = chunks_count;
    if (n == 0) return 0;
    size_t tally_bytes = n * k_chunk_pages * sizeof(uint16_t);
    auto* tally = static_cast<uint16_t*>(os::map(tally_bytes));
    if (!tally) return 0;
    Chunk* c = chunks;
    for (size_t i = 0; i < n; ++i, c = c->next) c->num = static_cast<uint32_t>(i);
    auto run_of = [](Free_slot* s) {
        Chunk* sc = Chunk::of(s);
        unsigned page = Chunk::page_of(s);
        return sc->num * k_chunk_pages + small_run_first_page(sc->map[page]);
    };
    bool any = false;
    for (unsigned b = 0; b < k_bins; ++b)
        for (Free_slot* s = free_slot[b]; s != k_list_end; s = checked_next(s))
            if (++tally[run_of(s)] == k_bin_count[b]) any = true;
    size_t released = 0;
    if (any) {
        for (unsigned b = 0; b < k_bins; ++b) {
            Free_slot* prev = nullptr;
            for (Free_slot* s = free_slot[b]; s != k_list_end;) {
                Free_slot* next = s->next;
                if (tally[run_of(s)] == k_bin_count[b]) {
                    if (prev) {
                        prev->next = next;
                        prev->shadow = shadow_of(prev, next);
                    } else {
                        free_slot[b] = next;
                    }
                } else {
                    prev = s;
                }
                s = next;
            }
        }
        c = chunks;
        for (size_t i = 0; i < n; ++i) {
            Chunk* next_chunk = c->next;
            const uint16_t* t = tally + i * k_chunk_pages;
            for (unsigned p = 1; p < k_chunk_pages; ++p) {
                uint32_t m = c->map[p];
                if (!(m & k_small) || small_run_first_page(m) != p) continue;
                if (t[p] != k_bin_count[small_bin(m)]) continue;
                unsigned count = k_bin_pages[small_bin(m)];
                for (unsigned k = 0; k < count; ++k) c->map[p + k] = 0;
                dirty_pages += c->mark_free(p, count);
                released += count * k_page_size;
            }
            if (c->empty()) release_chunk(c);
            c = next_chunk;
        }
    }
    os::unmap(tally, tally_bytes);
    return released;
}

size_t Heap::collect() {
    size_t released = 0;
    drain_remote();
    released += collect_small_runs();
    while (cached) {
        Chunk* c = cached;
        cached = c->next;
        --cached_count;
        unmap_chunk(c);
        released += k_chunk_size;
    }
    released += huge_cache_pages * k_page_size;
    purge();
    return released;
}

void Heap::for_each_live_block(void (*fn)(void* ctx, void* block, size_t size), void* ctx, bool own_runs) {
    drain_remote();
    // Per bin, the request's own blocks left to find (walking its own runs),
    // and all the live blocks left to find: none in a bin without own
    // blocks, else every block its counters say is live, an upper bound
    // (request heaps take no chains, so every free is counted by now; blocks
    // only leave them uncounted, in chunks merged away). Otherwise no bound:
    // a thread's heap holds blocks merged from request heaps, which its
    // counters never saw.
    uint64_t to_find[k_bins], own_left[k_bins];
    bool any = false;
    for (unsigned b = 0; b < k_bins; ++b) {
        uint64_t live = small_allocs[b] - small_frees[b];
        own_left[b] = own_runs ? live - carried_small[b] : UINT64_MAX;
        to_find[b] = !own_runs ? UINT64_MAX : own_left[b] ? live : 0;
        any |= to_find[b] != 0;
    }
    // Nothing of the request's own is live, large and huge blocks included
    // (size counts them all): no walk.
    if (own_runs && !any && usage() == base_size) return;
    // A slot is free when its second word is its link's shadow, as the
    // double-free check has it: every slot of a run is given one when the
    // run is cut, and an allocation clears it.
    Chunk* c = chunks;
    for (size_t i = 0; i < chunks_count; ++i, c = c->next) {
        for (unsigned p = 1; p < k_chunk_pages;) {
            uint32_t m = c->map[p];
            if (m & k_small) {
                unsigned bin = small_bin(m);
                char* slot = c->page_address(p);
                p += k_bin_pages[bin];
                if (to_find[bin] == 0) continue;
                const size_t slot_size = k_bin_size[bin];
                // Blocks left by earlier requests (lost ones pile up in a
                // leaky program's pages) are skipped by their bit, free
                // slots by the free test, the key in a register (as far as
                // the compiler knows, fn may change the heap). Both tests
                // are made for every slot and joined before the one branch:
                // carried and free slots alternate as the program left
                // them, and a branch on each mispredicted about every other
                // slot (the walk 2.9% of a leaky run's samples); the branch
                // on "live and the request's" is nearly never taken.
                const bool marked = own_runs && (m & k_small_slow_free) && c->carried_bits;
                const uint64_t link_key = key;
                // The run's bits (as Chunk::carried_has reads them), from
                // its first page: slot k's is bit k * slot_size / 8.
                const uint64_t* bits =
                    marked ? c->carried_bits + Chunk::carried_word(reinterpret_cast<uintptr_t>(slot))
                           : nullptr;
                const size_t bit_step = slot_size / 8;
                size_t bit = 0;
                for (unsigned k = 0, n = k_bin_count[bin]; k < n; ++k, slot += slot_size, bit += bit_step) {
                    auto* s = reinterpret_cast<const Free_slot*>(slot);
                    const uint64_t carried = marked ? (bits[bit >> 6] >> (bit & 63)) & 1 : 0;
                    const uint64_t is_free = s->shadow == shadow_with(link_key, s, s->next);
                    if (__builtin_expect(carried | is_free, 1)) continue;
                    fn(ctx, slot, slot_size);
                    if (--to_find[bin] == 0) break;
                    if (own_runs && (marked || !is_carried(slot)) && --own_left[bin] == 0) {
                        to_find[bin] = 0;
                        break;
                    }
                }
            } else if (m & k_large) {
                unsigned count = m & k_pages_mask;
                fn(ctx, c->page_address(p), size_t{count} * k_page_size);
                p += count;
            } else {
                ++p;
            }
        }
    }
    for (Huge_header* h = huge; h; h = h->next) fn(ctx, h->block(), h->size);
}

void Heap::merge_into(Heap& dst) {
    drain_remote();
    carried_untracked = false;  // what it held is dst's now
    // Wholly free runs first: a request that freed everything leaves only
    // empty chunks, which stay here for the next request.
    collect_small_runs();
    size_t moved_real = 0;
    while (chunks) {
        Chunk* m = chunks;
        unlink_chunk(m);
        m->heap = &dst;
        dst.link_chunk(m);
        moved_real += k_chunk_size;
        size_t dirty = m->dirty_count();
        dirty_pages -= dirty;
        dst.dirty_pages += dirty;
    }
    while (Huge_header* h = huge) {
        huge = h->next;
        h->heap = &dst;
        h->prev = nullptr;
        h->next = dst.huge;
        if (dst.huge) dst.huge->prev = h;
        dst.huge = h;
        moved_real += h->map_size;
    }
    for (unsigned b = 0; b < k_bins; ++b) {
        Free_slot* head = free_slot[b];
        if (head == k_list_end) continue;
        Free_slot* tail = head;
        while (tail->next != k_list_end) tail = checked_next(tail);
        tail->next = dst.free_slot[b];
        tail->shadow = shadow_of(tail, tail->next);
        dst.free_slot[b] = head;
        free_slot[b] = k_list_end;
    }
    dst.count_alloc(usage());
    dst.huge_bytes += huge_bytes;
    huge_bytes = 0;
    dst.count_real(moved_real);
    lower_real(moved_real);
    clear_usage();
    for (Heap* r = dst.retired; r; r = r->retired_next)
        if (r == this) return;  // retired there already (its last one has no next)
    retired_next = dst.retired;
    dst.retired = this;
}

void Heap::collect_runs_if_grown() {
    size_t floor = chunks_at_collect > 4 ? chunks_at_collect : 4;
    if (chunks_count > 2 * floor) {
        drain_remote();
        collect_small_runs();
        chunks_at_collect = chunks_count;
    }
    // Merged chunks bring freed pages: the budget applies to them as well,
    // even in a heap that itself frees nothing.
    maybe_purge();
}

void Heap::trim_cache(size_t keep) {
    while (cached_count > keep) {
        Chunk* c = cached;
        cached = c->next;
        --cached_count;
        unmap_chunk(c);
    }
}

void Heap::release_blocks() {
    drain_remote();
    while (huge) free_huge(huge);
    while (Chunk* c = chunks) {
        unlink_chunk(c);
        dirty_pages -= c->dirty_count();
        c->init(this, 0, Chunk::Pages::all_dirty);  // all pages free: a late free of a dead block is diagnosed
        dirty_pages += c->dirty_count();
        c->next = cached;
        cached = c;
        ++cached_count;
    }
    free_slot = empty_lists();
    clear_usage();
}

size_t Heap::held_by_carried() {
    const size_t held = held_real();
    if (!blocks || carried_untracked) return held;  // (which they are is not known: all of it)
    if (Chunk* c = chunks) {
        do {
            c->num = 0;  // (scratch: 1 once counted)
            c = c->next;
        } while (c != chunks);
    }
    size_t bytes = 0;
    blocks->for_each([&](const Block_info& b) {
        const void* p = reinterpret_cast<const void*>(b.address);
        if (is_chunk_granule(b.address)) {
            Chunk* c = Chunk::of(p);
            if (c->heap == this && c->num == 0) {
                c->num = 1;
                bytes += k_chunk_size;
            }
        } else if (granule_of(p) == granule_huge) {
            const Huge_header* h = Huge_header::of(p);
            if (h->heap == this) bytes += h->map_size;
        }
    });
    return bytes < held ? bytes : held;
}

void Heap::reset_for_request(size_t new_limit) {
    peak = usage();
    under_peak = 0;
    base_size = peak;
    for (unsigned b = 0; b < k_bins; ++b) carried_small[b] = small_allocs[b] - small_frees[b];
    // Not the request's: what earlier requests' live blocks hold, the
    // chunks and huge mappings they are in. The rest it holds, the runs and
    // chunks they emptied, is the request's, as a ZendMM request starts on
    // an emptied heap (all of it was the base: a request reusing a clean
    // one's runs ran past its 4 MiB limit with 7 MiB of blocks, more each
    // request). The room beside carried blocks, in their chunks, stays out
    // (the limit is checked as chunks are taken: charged up front, it
    // failed requests that had allocated nothing).
    const size_t held = held_real();
    limit_base = base_size ? held_by_carried() : 0;
    held_peak = held;
    real_peak = real_size;
    limit = new_limit;
}

void Heap::release_all() {
    while (huge) free_huge(huge);
    purge();
    while (chunks) {
        Chunk* c = chunks;
        forget_chunk(c);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        chunks = c->next == c ? nullptr : c->next;
        --chunks_count;
        drop_carried(c);
        unmap_chunk(c);
    }
    while (cached) {
        Chunk* c = cached;
        cached = c->next;
        --cached_count;
        unmap_chunk(c);
    }
    free_slot = empty_lists();
    clear_usage();
    dirty_pages = 0;
}

void Heap::stats(Heap_stats& out) const {
    memset(&out, 0, sizeof out);
    uint64_t small_bytes = 0, small_live = 0;
    // Blocks sent here in chains and not yet taken are freed: the owner's
    // counters first, then the count (taking lowers the count before the
    // counters: read the other way round, a block could be subtracted
    // twice). Those still in a sender's outbox count as in use.
    const size_t heap_size = usage();
    size_t sent = 0;
    for (unsigned b = 0; b < k_bins; ++b) {
        out.small_allocs[b] = small_allocs[b];
        uint64_t frees = small_frees[b];
        std::atomic_signal_fence(std::memory_order_seq_cst);
        uint64_t waiting = remote_bins[b].blocks.load(std::memory_order_acquire);
        // A block allocated here may be freed into another heap (requests
        // merge): per heap the difference can go negative; sums are right.
        out.small_in_use[b] = small_allocs[b] - frees - waiting;
        sent += waiting * k_bin_size[b];
        small_bytes += small_allocs[b] * k_bin_size[b];
        small_live += out.small_in_use[b] * k_bin_size[b];
    }
    out.size = heap_size > sent ? heap_size - sent : 0;
    out.huge_in_use_bytes = huge_bytes;
    out.large_in_use_bytes = out.size - small_live - huge_bytes;
    out.large_allocs = large_allocs;
    out.huge_allocs = huge_allocs;
    out.peak = peak;
    out.real_size = real_size;
    out.real_peak = real_peak;
    out.chunks = chunks_count;
    out.cached_chunks = cached_count;
    out.bytes_allocated = small_bytes + bytes_allocated_slow;
    out.bytes_freed = out.bytes_allocated - out.size;
    out.purged_bytes = purged_bytes;
    out.unmapped_bytes = unmapped_bytes;
}

const char* Heap::check() const {
    if (Chunk* c = chunks) {
        size_t n = 0;
        do {
            if (c->heap != this) return "chunk owned by another heap";
            if (const char* e = c->check()) return e;
            ++n;
            c = c->next;
        } while (c != chunks);
        if (n != chunks_count) return "chunks_count disagrees with the list";
    }
    for (unsigned i = 0; i < k_own_slots; ++i) {
        uintptr_t o = own_chunk[i];
        if (o == k_no_chunk) continue;
        if (own_slot(o) != i) return "own_chunk names a chunk in the wrong slot";
        bool listed = false;
        if (Chunk* c = chunks) {
            do {
                listed |= reinterpret_cast<uintptr_t>(c) == o;
                c = c->next;
            } while (c != chunks);
        }
        if (!listed) return "own_chunk names a chunk not on the owned list";
    }
    for (unsigned b = 0; b < k_bins; ++b)
        for (Free_slot* s = free_slot[b]; s != k_list_end; s = s->next) {
            if (granule_of(s) != granule_chunk || Chunk::of(s)->heap != this) return "free slot outside the heap";
            uint32_t m = Chunk::of(s)->map[Chunk::page_of(s)];
            if (!(m & k_small) || small_bin(m) != b) return "free slot in a page of another bin";
            if (s->shadow != shadow_of(s, s->next)) return "free slot with a bad shadow";
        }
    return nullptr;
}

}  // namespace zmm
