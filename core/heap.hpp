// A heap: ZendMM's zend_mm_heap, for one owner thread at a time.
//
// Free lists per bin (LIFO, link in the slot's first word, a shadow of the
// link in its second word), the chunks it owns, cached empty chunks, its huge
// blocks, and ZendMM's counters (size/peak: bytes in blocks; real_size/
// real_peak: bytes mapped). Only the owner thread touches anything but
// `owner`, `remote`, the atomic stack other threads push their frees onto,
// and `remote_bins`, where they push chains of small blocks (Outbox_chain).
//
// Block kinds by size (ZendMM's, but zmm's bins go to 4608: size_class.hpp):
// small 0..4608 from bins, large 4609 .. 2 MiB - 4 KiB as page runs inside a
// chunk, huge above that as their own 2 MiB aligned mapping with a header
// page just before the block.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "block_table.hpp"
#include "chunk.hpp"
#include "chunk_registry.hpp"
#include "diag.hpp"
#include "size_class.hpp"

namespace zmm {

// PREFETCHW (on x86-64 CPUs without it, a NOP: the opcode never faults).
inline void prefetch_for_write(const void* p) {
#if defined(__x86_64__)
    asm volatile("prefetchw (%0)" : : "r"(p));
#else
    __builtin_prefetch(p, 1);
#endif
}

struct Free_slot {
    Free_slot* next;
    uintptr_t shadow;  // next ^ key ^ this: a free slot proves it is free
};

// The end of every bin's free list, and of the chains sent to a bin: never
// null, so that the pop reads its slot's link without testing for an empty
// list first. Its link is itself and its shadow 0, which no key but 0 (keys
// are odd: os::random_u64) checks out: an empty list fails the pop's shadow
// test, whose slow branch tells the end from a corrupted slot. Read-only
// (after relocation): a stray write to it faults at once.
inline constexpr Free_slot g_list_end{const_cast<Free_slot*>(&g_list_end), 0};
inline constexpr Free_slot* k_list_end = const_cast<Free_slot*>(&g_list_end);

// The page just before a huge block.
struct Huge_header {
    uint64_t magic;
    Heap* heap;
    Huge_header* next;
    Huge_header* prev;
    size_t size;       // usable bytes: the request rounded up to pages
    bool aged;         // in the huge cache: survived a purge pass
    char* map_base;    // the whole mapping: this page and the block, and after
    size_t map_size;   // it, when taken from the cache, the slack of a bigger one
    void* block() { return reinterpret_cast<char*>(this) + k_page_size; }
    static Huge_header* of(const void* block) {
        return reinterpret_cast<Huge_header*>(reinterpret_cast<uintptr_t>(block) - k_page_size);
    }
};
inline constexpr uint64_t k_huge_magic = 0x7a6d6d2d68756765ull;  // "zmm-huge"

// Small blocks a thread freed into another thread's heap, gathered by bin
// in the freeing thread's outbox (its persistent heap's `outbox`) and pushed
// onto the owner's `remote_bins` stack of that bin a chain at a time: one
// atomic push per chain instead of one per block, and the owner takes a
// whole stack as its bin's free list without walking it (a stack walked
// block by block was a cache miss per block, serially: a quarter of
// larson's time). A chain's blocks are linked and shadowed as free slots
// of the owner's, so a second free of one is a double free.
struct Outbox_chain {
    Heap* to;
    Free_slot* head;
    Free_slot* tail;
    uint32_t count;
};
// A chain goes to its heap when it holds 4 KiB (or 64 blocks): what a
// thread that stops freeing can keep from other heaps is at most this per
// bin. (Chains of 1 KiB or 16 KiB: larson within 3%.)
inline constexpr size_t k_outbox_chain_bytes = 4096;
inline constexpr uint32_t k_outbox_chain_blocks = 64;
constexpr uint32_t outbox_chain_limit(unsigned bin) {
    size_t n = (k_outbox_chain_bytes + k_bin_size[bin] - 1) / k_bin_size[bin];
    return n < k_outbox_chain_blocks ? static_cast<uint32_t>(n) : k_outbox_chain_blocks;
}
inline constexpr auto k_outbox_limit = [] {
    std::array<uint32_t, k_bins> t{};
    for (unsigned b = 0; b < k_bins; ++b) t[b] = outbox_chain_limit(b);
    return t;
}();

// Process-wide tuning, set once at start-up from the options.
struct Heap_tuning {
    size_t dirty_budget_pages = 4096;  // freed pages kept resident per heap (16 MiB)
    unsigned cached_chunks = 16;       // empty chunks kept per heap
    bool huge_pages = false;           // transparent huge pages for chunks
    bool fork_rekey = false;           // ZMM_FORK_REKEY: a new free-list key in a forked child
    bool poison_new_runs = false;      // ZMM_DEBUG: new bin runs start as freed memory (debug_checks)
    bool batch_remote_frees = true;    // thread heaps take remote small frees in chains (not ZMM_DEBUG)
    // ZMM_DEBUG: a block freed by another thread than its heap's owner is
    // checked (canary) and poisoned by the owner, as it takes it from its
    // remote stack (debug_checks::on_drained): the heap's table is the
    // owner's alone.
    bool check_remote_frees = false;
};
extern Heap_tuning g_tuning;

// Per-bin counters for ZMM_STATS.
struct Heap_stats {
    uint64_t small_allocs[k_bins];
    uint64_t small_in_use[k_bins];
    uint64_t large_allocs, large_in_use_bytes;
    uint64_t huge_allocs, huge_in_use_bytes;
    uint64_t size, peak, real_size, real_peak;
    uint64_t chunks, cached_chunks;
    uint64_t bytes_allocated, bytes_freed;  // cumulative, rounded sizes
    uint64_t purged_bytes, unmapped_bytes;
    void add(const Heap_stats& o);
};

// A heap's owned-chunk cache (Heap::own_chunk): its slots, and what an empty
// one holds (never a chunk's start).
inline constexpr unsigned k_own_chunk_slots = 64;
inline constexpr uintptr_t k_no_chunk = 1;
using Own_chunks = std::array<uintptr_t, k_own_chunk_slots>;
constexpr std::array<Free_slot*, k_bins> empty_lists() {
    std::array<Free_slot*, k_bins> f{};
    for (auto& list : f) list = k_list_end;
    return f;
}
constexpr Own_chunks no_own_chunks() {
    Own_chunks o{};
    for (auto& slot : o) slot = k_no_chunk;
    return o;
}

class Heap {
public:
    // ---- hot: the fast path reads only these ----
    // Each ends with k_list_end (an empty list is k_list_end).
    std::array<Free_slot*, k_bins> free_slot = empty_lists();
    // ZendMM's size and peak (bytes in live blocks, rounded as ZendMM
    // rounds them, and their maximum), kept as the peak and the distance
    // below it: an allocation is one subtraction and a sign test, a free
    // one addition (usage() is the size).
    size_t peak;
    int64_t under_peak;
    uint64_t small_allocs[k_bins];
    uint64_t small_frees[k_bins];
    // The chunks this heap owns, as far as the fast free needs to know:
    // entry (c >> 21) % k_own_slots is c's start address when c is on the
    // owned list (`chunks`), or k_no_chunk (never a chunk's start). An
    // entry names an owned chunk or nothing, never a chunk gone or given
    // away (link_chunk sets it, unlink_chunk clears it): the fast free
    // trusts a match as the registry's "ours" and the chunk's "this heap's"
    // at once, one comparison instead of a registry load and the chunk
    // header's. A miss is not an answer (a heap of more chunks than slots,
    // two chunks on one slot): the caller asks the registry (owns_chunk_of)
    // and may remember the chunk. Read and written by the heap's user only:
    // its owner thread, or a thread that holds it unowned under the pool's
    // lock (a pooled heap's drain).
    // (Empty from the start: g_empty_heap, constinit, must match no address
    // from the first malloc of the process on.)
    static constexpr unsigned k_own_slots = k_own_chunk_slots;
    Own_chunks own_chunk = no_own_chunks();
    // Read-only once set up, and so in lines of their own: other threads'
    // frees read the key (free_remote) while the owner writes the counters
    // above; sharing a line with them cost larson a cache miss per free.
    alignas(64) uint64_t key = 1;  // never 0 (k_list_end); g_empty_heap's is 1
    // Copies of the constant per-bin tables (size class, slot divisor),
    // addressed from the heap pointer the hot path already holds: one
    // instruction per lookup instead of three for a PIC global table.
    uint64_t bin_slot_multiplier[k_bins];
    uint64_t bin_slot_limit[k_bins];
    uint64_t bin_size[k_bins];  // (8 bytes: indexed as the tables beside it, one base register)
    // k_size_claims (a sized delete's size against the block's bin).
    uint64_t bin_claim_low[k_bins];
    uint64_t bin_claim_span[k_bins];
    // k_bin_lookup, for the same reason: malloc's size-to-bin is one load
    // from the heap pointer, where the global table's address took a load
    // of its own (4.5 KiB a heap).
    Bin_lookup bin_lookup = k_bin_lookup;
    unsigned bin_of(size_t size) const { return bin_lookup.bin[size]; }  // size <= k_max_small
    // Other threads may send small blocks of this heap in chains (a thread's
    // persistent heap: no request, no table; set before it has an owner).
    bool takes_chains;

    // ---- shared with other threads ----
    alignas(64) std::atomic<Free_slot*> remote;  // blocks freed by other threads
    std::atomic<const void*> owner;              // the owner thread's token, or null
    // Chains of small blocks other threads freed, per bin, and how many
    // blocks they sent (counted before the chain is pushed: taken with the
    // stack, the count covers at least the blocks taken). A bin's two on
    // one cache line: a sender's count and push, and the owner's taking,
    // miss once, not twice.
    struct Remote_bin {
        std::atomic<Free_slot*> chains;
        std::atomic<uint32_t> blocks;
    };
    alignas(64) Remote_bin remote_bins[k_bins];

    // ---- cold ----
    alignas(64) Chunk* chunks;  // owned chunks, in a circular list
    Chunk* cached;              // empty chunks kept for reuse (singly linked)
    Huge_header* huge;
    size_t chunks_count;
    size_t cached_count;
    size_t real_size;  // bytes mapped: chunks (cached too) and huge blocks
    size_t real_peak;
    // As ZendMM's memory_limit, on what the request holds: held_real()
    // (mapped, less the caches: a cached chunk counts once taken, as
    // ZendMM's real_size counts it) less limit_base.
    size_t limit;
    size_t limit_base; // held bytes that hold earlier requests' live blocks: not this request's
    size_t held_peak;  // held_real()'s peak since the request began
    // A request heap's bytes in blocks earlier requests left (carried) at
    // the request's begin, less those freed since: the request's own usage
    // is usage() - base_size, its peak peak - base_size.
    size_t base_size;
    // Per bin, the small blocks live at the request's begin (carried: the
    // slots allocated less those freed, then), less the carried ones freed
    // since: small_allocs - small_frees - carried_small is the running
    // request's own live blocks of the bin.
    uint64_t carried_small[k_bins];
    // A block left live by a request could not join the table (no memory
    // for it): its free will not lower carried_small, so a request end must
    // walk every run (control's gather_live_blocks). Until the heap is
    // merged away.
    bool carried_untracked;
    size_t requesting; // the allocation being served by a slow path, for the limit's message
    size_t chunks_at_collect;  // see collect_runs
    // A request heap takes empty chunks from its thread's heap's cache too
    // (chunks merged there after earlier requests, emptied since).
    Heap* chunk_source;
    size_t dirty_pages;        // free pages of chunks (owned or cached) maybe resident
    Huge_header* huge_cache;   // freed huge mappings kept for reuse
    size_t huge_cache_pages;
    uint64_t last_purge_ns;
    uint32_t next_chunk_num;
    uint64_t large_allocs, huge_allocs;
    size_t huge_bytes;  // in live huge blocks (part of size)
    uint64_t bytes_allocated_slow;  // large and huge, cumulative
    uint64_t freed_bytes_large_huge;
    uint64_t purged_bytes, unmapped_bytes;
    Heap* all_next;   // every heap ever made (heap_pool)
    Heap* pool_next;  // abandoned heaps waiting for a thread
    uint64_t pooled_ns;  // since when it waits in the pool; 0 once trimmed, until blocks are freed into it (heap_pool)
    // Request heaps whose chunks were merged into this one: frees another
    // thread pushed onto their remote stacks late are drained with ours.
    Heap* retired;
    Heap* retired_next;
    // A request heap's table: traced, every live block's origin; untraced,
    // the blocks carried from earlier requests; ZMM_DEBUG, every block's
    // requested size.
    Block_table* blocks;
    void* request;        // the request this heap serves (control's), or null
    // `blocks` holds only carried blocks (an untraced request's, without
    // ZMM_DEBUG's sizes): a block may_be_carried rules out is not in it.
    bool table_only_carried;
    bool internal;        // zmm's own (the tool heap): not the program's memory
    // A thread's persistent heap: the chains of small blocks its thread
    // freed into other heaps (free_through_outbox), by bin, not yet sent
    // (send_chain).
    Outbox_chain outbox[k_bins];

    // Sets up a heap with no memory. `key` is the process's free-list key.
    void init(uint64_t free_list_key);

    // ZendMM's size: bytes in live blocks. (Another thread that reads it may
    // see the two fields from different moments: what would be negative is 0.)
    size_t usage() const {
        const size_t top = peak;
        const int64_t under = under_peak;
        return under > static_cast<int64_t>(top) ? 0 : top - static_cast<size_t>(under);
    }
    // Blocks allocated from this heap so far, of every kind.
    uint64_t allocations() const {
        uint64_t n = large_allocs + huge_allocs;
        for (uint64_t a : small_allocs) n += a;
        return n;
    }
    // Bytes in the current request's own blocks (over base_size), and their peak.
    size_t size_in_request() const { return usage() > base_size ? usage() - base_size : 0; }
    size_t peak_in_request() const { return peak > base_size ? peak - base_size : 0; }
    // Mapped memory in the caches (empty chunks, freed huge mappings), and
    // the rest: what the heap holds.
    size_t cached_bytes() const { return cached_count * k_chunk_size + huge_cache_pages * k_page_size; }
    size_t held_real() const { return real_size > cached_bytes() ? real_size - cached_bytes() : 0; }
    // Memory the current request holds (over limit_base).
    size_t real_in_request() const { return held_real() > limit_base ? held_real() - limit_base : 0; }
    // Can the request hold `bytes` more within its limit?
    bool fits_limit(size_t bytes) const { return bytes <= limit && real_in_request() <= limit - bytes; }
    size_t real_peak_in_request() const { return held_peak > limit_base ? held_peak - limit_base : 0; }
    // After the heap holds more (mapped, or taken from a cache).
    void note_held() {
        if (const size_t h = held_real(); h > held_peak) held_peak = h;
    }

    // ---- allocation ----
    // `size` (the request) only matters on the slow path of the empty heap.
    inline void* alloc_small(unsigned bin, size_t size);
    // A slot from the bin's free list, or nullptr when it is empty: the
    // preload's fast path, whose misses take its slow path (which marks the
    // thread as inside the allocator before the heap changes).
    inline void* pop_small(size_t bin);  // (size_t: the index needs no widening)
    // The preload's pop: nullptr where pop_small would return nullptr or
    // diagnose a corrupted slot, both for the slow path (whose pop_small
    // then diagnoses it), so that the main line calls nothing.
    inline void* try_pop_small(size_t bin);
    void* alloc(size_t size);  // any size; nullptr (errno ENOMEM) on failure
    void* alloc_zeroed(size_t size);  // calloc: fresh mappings are not cleared twice
    void* alloc_aligned(size_t alignment, size_t size);
    void* realloc(void* p, size_t size);  // p is zmm's (any heap) or null

    // ---- free ----
    // The fast local free of a small block of this heap; false when p needs
    // the general path (not a small slot start of this heap).
    // `size_claimed`, when given, is the size the caller claims (a sized
    // delete): a block of a bin that size is not of declines too.
    bool free_small_fast(void* p) { return free_small_fast_claimed<false>(p, 0); }
    bool free_small_fast(void* p, size_t size_claimed) { return free_small_fast_claimed<true>(p, size_claimed); }
    // free_small_fast's main line, for the preload's inline fast path
    // (free_small_fast, which tests and the fuzz model call, wraps it):
    // k_fast_freed when freed; k_fast_free_uncached when p is not in a chunk
    // own_chunk names (another heap's, not a chunk, or one of this heap's
    // the cache does not hold: owns_chunk_of and remember_chunk);
    // k_fast_free_declined otherwise. A page with carried blocks
    // (k_small_slow_free) fails the main line's slot test; its blocks that
    // are not carried are freed on a branch out of the main line
    // (free_in_carried_page), the carried ones decline: the table forgets them.
    enum Fast_free { k_fast_freed, k_fast_free_declined, k_fast_free_uncached };
    inline Fast_free try_free_small(void* p) { return try_free_small_claimed<false>(p, 0); }
    // A sized delete's: declines (k_fast_free_declined) a block of a bin
    // `size` is not of as well, any size (one beyond the bins too).
    inline Fast_free try_free_small_sized(void* p, size_t size) {
        return try_free_small_claimed<true>(p, size);
    }
    // Does `size` belong to bin b (as k_size_claims has it)?
    bool size_claim_fits(size_t size, size_t b) const { return size - bin_claim_low[b] <= bin_claim_span[b]; }
    // The fast free's branch for a slot test that failed: frees p, a slot
    // of `bin` in a page with carried blocks (`info`, the page's map word,
    // of chunk c), if it is not carried itself nor free, as the main line
    // would. false leaves an interior pointer, a carried block (the table
    // forgets it) and a double free to the slow path.
    inline bool free_in_carried_page(Chunk* c, void* p, uint32_t info, size_t bin);
    static unsigned own_slot(uintptr_t a) { return static_cast<unsigned>(a >> k_granule_shift) % k_own_slots; }
    // realloc's fast path, on the free fast path's terms: p a live slot of
    // a chunk own_chunk names, in a page without carried blocks, and `size`
    // small (not 0). Returns p if size's bin is still p's (ZendMM: a block
    // stays where it fits and would not fit a smaller bin), else a slot of
    // size's bin from its free list, holding p's bytes, p freed. nullptr on
    // anything else, p untouched: the slow path's (an empty bin list, a
    // large size, a misuse it diagnoses).
    inline void* try_realloc_small(void* p, size_t size);
    // Its move, out of line (the copy is most of it): s, a live slot of
    // `bin`, to a slot of `want` from its free list; nullptr if that is empty.
    void* realloc_small_move(Free_slot* s, unsigned bin, unsigned want, size_t size);
    // Is p in a chunk on this heap's owned list (the registry, then the
    // chunk's owner)? Its cached chunks name it as their owner too, but are
    // empty, and an owned chunk never is (the free of its last block gives
    // it back): a stale pointer into a cached chunk is not remembered.
    bool owns_chunk_of(const void* p) const {
        if (!is_chunk_granule(reinterpret_cast<uintptr_t>(p))) return false;
        const Chunk* c = Chunk::of(p);
        return c->heap == this && !c->empty();
    }
    // c, a chunk of this heap's, in own_chunk (its slot's chunk forgotten).
    void remember_chunk(const Chunk* c) { own_chunk[own_slot(reinterpret_cast<uintptr_t>(c))] = reinterpret_cast<uintptr_t>(c); }
    // Carried blocks (an untraced request heap's blocks that earlier
    // requests left live, in its table `blocks`): their frees must take the
    // slow path, which makes the table forget them. mark_carried makes p (a
    // live block of this heap) one: a small block's bit in its chunk's
    // carried bits, and its page's k_small_slow_free, which sends every free
    // in the page off the fast path's main line. Its free clears the bit;
    // the page's last one clears the mark.
    void mark_carried(const void* p);
    // Is p (a live block of a heap) a carried one, by its page's mark and
    // its chunk's bits? k_not_carried: surely not (a small block in a page
    // without carried blocks, or whose bit is clear); k_carried: surely (its
    // bit is set: it is in the table); k_ask_table otherwise.
    enum Carried_mark { k_not_carried, k_carried, k_ask_table };
    static Carried_mark carried_mark(const void* p);
    static bool may_be_carried(const void* p) { return carried_mark(p) != k_not_carried; }
    // Is p (a live block of this heap) carried? The table's answer.
    bool is_carried(const void* p) const;
    // Does `size` fit the block p (a sized delete's claim)? For any zmm block.
    static bool size_matches(const void* p, size_t size);

    // Frees a block the registry says is zmm's and that belongs to this heap
    // (the caller checked ownership). Diagnoses misuse.
    void free_owned(void* p);
    // free_owned for a traced request heap's frees (every block is in its
    // table, if it has one): the table forgets p, then a small block takes
    // the fast free's main line; anything that declines (a misuse
    // included) is free_owned's.
    void free_traced(void* p) {
        if (blocks) forget(p);
        if (try_free_small(p) != k_fast_freed) free_owned(p);
    }
    // Frees a block of another heap: pushed onto that heap's remote stack.
    static void free_remote(Heap* owner_heap, void* p);
    // Frees p, a block of `to` (another thread's heap, takes_chains): a
    // small block joins this heap's outbox chain for its bin (this is the
    // calling thread's persistent heap), anything else goes onto `to`'s
    // remote stack.
    void free_through_outbox(Heap* to, void* p);
    // Its last step: p, a slot's start of `bin` in `to`'s chunk, not free.
    inline void free_slot_through_outbox(Heap* to, void* p, unsigned bin);
    // Sends every outbox chain to its heap (the thread stops, or reports).
    void flush_outbox();
    unsigned outbox_chains() const;  // the outbox's chains not empty
    // Frees any pointer the registry knows, as free_block_of does. Returns
    // the block's heap, or nullptr if p is not zmm's.
    static Heap* free_any(void* p, const void* current_owner, Heap* outbox = nullptr);
    // Frees p, a block of h's (the caller found its heap): locally if h's
    // owner is `current_owner` (the caller's thread token), else to h's
    // remote stacks, through `outbox` (the caller's persistent heap, or
    // null: no chains) when h takes chains; a heap whose thread is gone is
    // drained at once (heap_pool::reclaim_if_abandoned).
    static void free_block_of(Heap* h, void* p, const void* current_owner, Heap* outbox);
    // free_block_of for p in a chunk (the registry said so) that another
    // heap owns, from the fast path's miss: a block of another heap of the
    // calling thread's (a traced request's) is freed there at once, a small
    // slot of a live thread's heap goes straight to the outbox, in one
    // function (larson's frees); the rest as free_block_of.
    static void free_in_chunk_of_other(void* p, const void* current_owner, Heap* outbox);
    // Its common case, inline for the preload: p, in a chunk of another
    // heap (the registry said so), a small slot's start of a heap whose
    // thread lives (and is not the caller, `current_owner`) and that takes
    // chains, joins this heap's outbox chain for p's bin, which already
    // goes to that heap (this: the calling thread's persistent heap).
    // Returns -1: not that case, nothing done; 0: done; b + 1: done, and
    // the chain of bin b is full: the caller sends it (send_outbox_chain)
    // as a slow path. Touches nothing but the outbox and p's first two
    // words (no counter, no list of the heap's): a thread stopped in it by
    // a leak scan, or interrupted by a signal handler (whose frees take
    // the reentry path), leaves nothing half done that they read.
    inline int try_free_to_outbox(void* p, const void* current_owner);
    void send_outbox_chain(unsigned bin) { send_chain(outbox[bin], bin); }

    // A new free-list key (a forked child, as ZendMM's zend_mm_refresh_key_child):
    // every free slot's shadow, on the free lists, the remote stacks and in
    // the outbox, is rewritten with it. A link whose shadow is already wrong
    // ends its list's walk (that list stays corrupted, and is diagnosed when
    // reached).
    void rekey(uint64_t new_key);

    // Takes what other threads sent: the chains into this heap's bins, and
    // the remote stack (and those of its retired request heaps) block by
    // block, each block into the heap that owns it now. Loads only when
    // nothing waits.
    void drain_remote();
    bool has_remote() const {
        if (has_remote_stack()) return true;
        for (unsigned b = 0; b < k_bins; ++b)
            if (remote_bins[b].chains.load(std::memory_order_relaxed)) return true;
        return false;
    }

    // ---- requests ----
    // Calls fn for every live block (its address and rounded size).
    // `own_runs`: on a request heap, may skip small runs of bins that hold
    // none of the running request's own blocks (allocated since
    // reset_for_request), and a bin's later runs once all its own live
    // blocks are listed; it skips the carried blocks its chunk's bits name
    // (carried_mark), unread, and lists those only the table knows. A
    // request that leaked nothing walks nothing.
    void for_each_live_block(void (*fn)(void* ctx, void* block, size_t size), void* ctx,
                             bool own_runs = false);
    // Moves every chunk with live blocks, every huge block and the free lists
    // into `dst` (a heap of the same thread), after giving back wholly free
    // runs; empty chunks stay in this heap's cache. This heap is then empty
    // and retired into dst.
    void merge_into(Heap& dst);
    // Keeps at most `keep` cached chunks, unmapping the rest.
    void trim_cache(size_t keep);
    // Gives back wholly free small runs and the chunks they empty, when the
    // heap has twice the chunks it had after the last time (amortised: each
    // free slot is visited once per doubling). Request leaks merged into a
    // thread's heap and freed later would otherwise keep their chunks forever.
    void collect_runs_if_grown();
    // ZendMM's request-end reclaim: every block dies; chunks go to the cache
    // (trimmed later), huge blocks are unmapped.
    void release_blocks();
    // Readies a request heap for the next request. What it holds stays:
    // cached chunks (counted in real_size, as ZendMM does) and the blocks
    // earlier traced requests leaked (carried: their chunks are left out of
    // the limit, so each request has a fresh budget). Peaks restart here.
    void reset_for_request(size_t new_limit);
    // Mapped bytes of the chunks and huge mappings that hold the blocks in
    // `blocks` (a request heap's carried ones, at a request's begin).
    size_t held_by_carried();

    // ---- queries ----
    // Calls fn(ctx, lo, hi) for each range of this heap's huge mappings that
    // holds no live block, only stale contents: the cached mappings, and the
    // slack after a live block in a bigger one. Walks defensively (the leak
    // scan reads another thread's heap): stops at a header that does not
    // check out.
    void for_each_stale_huge_range(void (*fn)(void* ctx, uintptr_t lo, uintptr_t hi), void* ctx) const;
    // Usable size of any zmm block, or 0 if p is not zmm's.
    static size_t usable_size(const void* p);
    // Where the heaps' memory that holds p ends: its chunk's end, its huge
    // block's mapping's end; p itself where p is in neither (a cached huge
    // mapping holds no block: not counted). The registry marks a huge
    // block's last 2 MiB granule whole, but the mapping may end inside it,
    // and the kernel may place another after it there (a library's data, a
    // thread's stack). Defensive as for_each_stale_huge_range: a header
    // that does not check out leaves the granule to the registry. Reads
    // headers directly: for a leak scan, which holds the heaps' mappings.
    static uintptr_t heap_memory_end(const void* p);
    // Is a pointer that starts no live block of zmm's still zmm's to
    // diagnose: inside a chunk or a live huge block's mapping, in a freed
    // huge block's cached mapping's first granule, or where a freed huge
    // block whose mapping is gone started (a double free)? Elsewhere it may
    // be another allocator's (glibc's): past a live huge block's mapping in
    // its last granule, in a granule a huge mapping left, or at such a
    // start (foreign_block_at_freed_huge_start). A huge block's
    // header is read as a copy (os::copy_mapped): its owner may free and
    // unmap it meanwhile.
    static bool claims(const void* p);
    // The misuse a pointer that starts no live block is (a double free, an
    // interior or unknown pointer), diagnosed: does not return.
    [[noreturn]] static void diagnose_not_a_block(void* p);
    // Is p in a page of a small run (a bin's slot, or inside one)? By the
    // page, not the size: a page run may be as small as a bin's slot (an
    // aligned allocation of 4 KiB is a run of one page, bin 30's size).
    static bool in_small_run(const void* p);
    // The usable size of the live block that starts at p, or 0 when p is not
    // the start of a live zmm block (free slot, freed run, any other
    // address). Never faults, never diagnoses: for the leak scan.
    static size_t live_block_size(const void* p);
    // The heap owning a zmm block, nullptr if not zmm's.
    static Heap* owner_of(const void* p);

    // ---- memory return ----
    // Freed memory still resident: dirty free pages, cached huge mappings.
    size_t free_resident_pages() const { return dirty_pages + huge_cache_pages; }
    // Gives dirty free pages and cached huge mappings back to the OS: every
    // one, or only those already dirty at the last pass; once no more than
    // `keep_pages` stay resident, it stops.
    void purge(bool only_aged = false, size_t keep_pages = 0);
    // Releases what can be released: cached chunks, wholly free small runs
    // (ZendMM's zend_mm_gc), purges dirty free pages. Returns bytes released.
    size_t collect();
    // Returns every chunk and huge block to the OS. Only for a heap whose blocks
    // are all dead (tests, request reclaim).
    void release_all();

    // Counters only (no list walking): safe to read from another thread,
    // the figures then being approximate.
    void stats(Heap_stats& out) const;
    // Checks every owned chunk's header; nullptr or the first fault.
    const char* check() const;

    // Is `offset` (from the run's first byte) the start of one of its slots?
    // (See Slot_divisor: one multiply, one compare.)
    bool is_slot_start(uint64_t offset, size_t bin) const {
        return offset * bin_slot_multiplier[bin] <= bin_slot_limit[bin];
    }

    // The second word of a free slot whose link is `next`, under `key`.
    static uintptr_t shadow_with(uint64_t key, const Free_slot* s, const Free_slot* next) {
        return reinterpret_cast<uintptr_t>(next) ^ key ^ reinterpret_cast<uintptr_t>(s);
    }
    uintptr_t shadow_of(const Free_slot* s, const Free_slot* next) const { return shadow_with(key, s, next); }
    // Do p's first two words hold a free slot's link under this heap's key?
    // A slot on a free list, or any block on its way back to this heap from
    // another thread's free (a remote stack, an outbox chain): a free of it
    // is a double free.
    bool holds_link(const void* p) const {
        auto* s = static_cast<const Free_slot*>(p);
        return s->shadow == shadow_of(s, s->next);
    }
    // s's link, once its shadow proves it one (a walk of a free list must
    // not follow an overwritten link: heap corrupted).
    Free_slot* checked_next(const Free_slot* s) const {
        Free_slot* next = s->next;
        if (__builtin_expect(s->shadow != shadow_of(s, next), 0)) misuse(Misuse::heap_corrupted, s);
        return next;
    }

private:
    template <bool Claimed>
    inline Fast_free try_free_small_claimed(void* p, size_t size_claimed);
    template <bool Claimed>
    inline bool free_small_fast_claimed(void* p, size_t size_claimed);
    template <bool Diagnose>
    inline void* pop_small_from(size_t bin);
    void* alloc_small_slow(unsigned bin, size_t size);
    void drain_remote_stacks();  // drain_remote but the chains
    bool has_remote_stack() const {
        return remote.load(std::memory_order_relaxed) != nullptr || retired != nullptr;
    }
    // Takes the bin's remote chains as free slots.
    void take_remote_chains(unsigned bin);
    void send_chain(Outbox_chain& o, unsigned bin);
    // The last step of both outbox paths: s, a block of o.to's (whose key
    // is `key`), joins the chain. Returns whether the chain is now full (its
    // caller sends it).
    inline bool append_to_chain(Outbox_chain& o, unsigned bin, Free_slot* s, uint64_t key);
    void restart_chain(Outbox_chain& o, unsigned bin, Heap* to, Free_slot* s);  // o for `to` from now
    // `zeroed` (if given): set to whether every page of the run reads as zero.
    void* alloc_large(size_t size, bool* zeroed = nullptr);
    void* alloc_huge(size_t size, size_t alignment, bool use_cache = true);
    void link_huge(Huge_header* h, size_t len);
    Huge_header* take_cached_huge(size_t len);
    size_t purge_chunk(Chunk* c, bool only_aged, size_t most);
    void maybe_purge();
    void* alloc_pages(unsigned count, unsigned align_pages, Chunk** chunk_out, bool* zeroed = nullptr);
    // The first page of `count` free ones (aligned to `align_pages`) in one
    // of the heap's chunks, *chunk_out that chunk; 0 if none has them.
    unsigned find_free_run(unsigned count, unsigned align_pages, Chunk** chunk_out) const;
    Chunk* new_chunk();
    Chunk* chunk_from_cached_huge();
    void release_chunk(Chunk* c);
    size_t collect_small_runs();
    void unmap_chunk(Chunk* c);
    // p, in a page of this heap's whose map word is `info`: diagnoses an
    // interior pointer or a slot that is free already.
    void check_slot(void* p, uint32_t info) const;
    void free_small(void* p, uint32_t info);
    inline void push_free(Free_slot* s, size_t bin);
    // p leaves the table, and is no longer carried.
    void forget(void* p);
    // Can p be in `blocks`? (The frees of an untraced request skip the lookup.)
    bool may_be_in_table(const void* p) const {
        return blocks && (!table_only_carried || may_be_carried(p));
    }
    void unmark_carried(uintptr_t a);
    // Forgets c's carried blocks: its bits (back to the pool), the pages' marks.
    static void drop_carried(Chunk* c);
    void free_large(Chunk* c, unsigned page, unsigned pages);
    void free_huge(Huge_header* h);
    void free_owned_unchecked(void* p);
    void* realloc_huge(Huge_header* h, size_t size);
    void* realloc_block(void* p, size_t size);  // realloc, less a carried block's accounting
    bool grow_real(size_t bytes);
    static void drain_stack(Free_slot* s);
    void link_chunk(Chunk* c);
    // The OS refused a mapping: give back what this thread's heaps cache.
    void collect_for_os();
    void unlink_chunk(Chunk* c);
    void forget_chunk(const Chunk* c);  // out of own_chunk, if there
    void count_alloc(size_t bytes) {
        bool past_peak;
#if defined(__x86_64__)
        // One instruction on memory and its sign flag: the compiler, left
        // to itself, loads, subtracts, stores and tests.
        asm("subq %2, %0" : "+m"(under_peak), "=@ccs"(past_peak) : "r"(bytes));
#else
        under_peak -= static_cast<int64_t>(bytes);
        past_peak = under_peak < 0;
#endif
        if (__builtin_expect(past_peak, 0)) {
            peak += static_cast<size_t>(-under_peak);
            under_peak = 0;
        }
    }
    void count_free(size_t bytes) { under_peak += static_cast<int64_t>(bytes); }
    // No block live (the peak stays).
    void clear_usage() { under_peak = static_cast<int64_t>(peak); }
    // Mapped memory given back: the request's baseline (limit_base, what
    // earlier requests left) cannot stay above what is held.
    void lower_real(size_t bytes) {
        real_size -= bytes;
        if (limit_base > held_real()) limit_base = held_real();
    }
    void count_real(size_t bytes) {
        real_size += bytes;
        if (real_size > real_peak) real_peak = real_size;
        note_held();
    }
};

// The heap of a thread that has none yet (or whose heap left at thread exit,
// or when zmm is bypassed): no chunks, every free list empty, never an owner.
// Pointing the thread's heap pointer here instead of at null spares the hot
// path a test: its allocations fall into the slow path, which calls
// heap_missing; its frees never match a chunk's heap.
extern constinit Heap g_empty_heap;

// Called when an allocation would take `heap` past its limit even after
// collect(). Returns true to let it go ahead (the limit was raised or lifted),
// false to fail it with ENOMEM; may also not return (fatal action, or a
// handler that longjmps). The embedder defines it; core's weak default fails.
bool heap_limit_exceeded(Heap& heap, size_t requested);

// Serves an allocation that reached the empty heap. The embedder (the
// preload) defines it; core's weak default fails with ENOMEM. A definition
// at link time, not a pointer set at start-up: the first malloc of a
// process can come before any start-up code has run.
void* heap_missing(size_t size);

// Is p, where a freed huge block of zmm's started and whose mapping is
// gone, another allocator's block now (Heap::claims asks, for a pointer
// that would otherwise be a double free)? The embedder (the preload:
// glibc's aligned blocks land there) defines it; core's weak default says no.
bool foreign_block_at_freed_huge_start(const void* p);

inline Heap::Carried_mark Heap::carried_mark(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (!is_chunk_granule(a)) return k_ask_table;
    const Chunk* c = Chunk::of(p);
    uint32_t info = c->map[Chunk::page_of(p)];
    if (!(info & k_small)) return k_ask_table;
    if (!(info & k_small_slow_free)) return k_not_carried;
    if (!c->carried_bits) return k_ask_table;  // (memory ran out: every block of the page is marked)
    return c->carried_has(a) ? k_carried : k_not_carried;
}

inline void* Heap::pop_small(size_t bin) { return pop_small_from<true>(bin); }
inline void* Heap::try_pop_small(size_t bin) { return pop_small_from<false>(bin); }

inline void* Heap::alloc_small(unsigned bin, size_t size) {
    if (void* p = pop_small(bin); __builtin_expect(p != nullptr, 1)) return p;
    return alloc_small_slow(bin, size);
}

template <bool Diagnose>
inline void* Heap::pop_small_from(size_t bin) {
    Free_slot* s = free_slot[bin];
#if defined(__x86_64__)
    // The slot in the return register from the start: left to itself, the
    // compiler kept the heap there (where the thread pointer's load put
    // it) and moved the slot at the end.
    asm("" : "+a"(s));
#endif
    Free_slot* next = s->next;
    // (An empty list's k_list_end fails this test too: one test for both.)
    if (__builtin_expect((s->shadow ^ reinterpret_cast<uintptr_t>(next) ^ key) != reinterpret_cast<uintptr_t>(s), 0)) {
        if (!Diagnose || s == k_list_end) return nullptr;
        misuse(Misuse::heap_corrupted, s);
    }
    free_slot[bin] = next;
    // The next allocation's slot, read while the program uses this one: a
    // slot another thread freed last (a chain taken whole) is a cache miss.
    // For writing (the pop clears its link): a line fetched to be read
    // comes shared from the core that freed it, and the store then takes
    // a second trip for ownership.
    prefetch_for_write(next);
    // An allocated slot must not look free, and must not hold the free
    // list's link: the leak scan would read it as a pointer (one 16-byte store).
    s->next = nullptr;
    s->shadow = 0;
    small_allocs[bin]++;
    count_alloc(bin_size[bin]);
    return s;
}

template <bool Claimed>
inline Heap::Fast_free Heap::try_free_small_claimed(void* p, size_t size_claimed) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    uintptr_t base = a & ~(k_chunk_size - 1);
    if (__builtin_expect(own_chunk[own_slot(a)] != base, 0)) return k_fast_free_uncached;
    Chunk* c = reinterpret_cast<Chunk*>(base);
    // The word, sign-extended, shifted: negative for a small page (k_small
    // is the sign), its bin then the result + 32. One shift for the test
    // and the bin, where a sign test and a shift were two.
    const int64_t signed_info = static_cast<int32_t>(c->map[Chunk::page_of(p)]);
    const uint32_t info = static_cast<uint32_t>(signed_info);
    const int64_t bin_less_32 = signed_info >> k_small_bin_shift;
    if (__builtin_expect(bin_less_32 >= 0, 0)) return k_fast_free_declined;
    size_t bin = static_cast<size_t>(bin_less_32) + 32;
    if constexpr (Claimed)
        if (__builtin_expect(!size_claim_fits(size_claimed, bin), 0)) return k_fast_free_declined;
    uint64_t offset = fast_offset_in_run(a, info);
    if (__builtin_expect(!is_slot_start(offset, bin), 0))
        return free_in_carried_page(c, p, info, bin) ? k_fast_freed : k_fast_free_declined;
    Free_slot* s = static_cast<Free_slot*>(p);
    if (__builtin_expect(s->shadow == shadow_of(s, s->next), 0)) return k_fast_free_declined;
    push_free(s, bin);
    return k_fast_freed;
}

inline void* Heap::try_realloc_small(void* p, size_t size) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    uintptr_t base = a & ~(k_chunk_size - 1);
    if (size - 1 >= k_max_small || own_chunk[own_slot(a)] != base) return nullptr;
    Chunk* c = reinterpret_cast<Chunk*>(base);
    uint32_t info = c->map[Chunk::page_of(p)];
    if (!(info & k_small)) return nullptr;
    unsigned bin = small_bin(info);
    uint64_t offset = fast_offset_in_run(a, info);
    if (!is_slot_start(offset, bin)) return nullptr;  // (a page with carried blocks too)
    Free_slot* s = static_cast<Free_slot*>(p);
    if (s->shadow == shadow_of(s, s->next)) return nullptr;  // free already
    unsigned want = bin_of(size);
    if (want == bin) return p;
    return realloc_small_move(s, bin, want, size);
}

template <bool Claimed>
inline bool Heap::free_small_fast_claimed(void* p, size_t size_claimed) {
    Fast_free r = try_free_small_claimed<Claimed>(p, size_claimed);
    if (r == k_fast_free_uncached && owns_chunk_of(p)) {
        remember_chunk(Chunk::of(p));
        r = try_free_small_claimed<Claimed>(p, size_claimed);
    }
    return r == k_fast_freed;
}

inline bool Heap::free_in_carried_page(Chunk* c, void* p, uint32_t info, size_t bin) {
    // The main line's registers stay its own: this branch loads the bin's
    // figures again (held from the main line's slot test, they would cost
    // the main line registers: pushes and pops, an instruction). It may
    // still end in the main line's own shadow test and push.
    asm volatile("" ::: "memory");
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    // (No test of k_small_slow_free: without it the offset is the one the
    // main line's slot test just failed.)
    if (!is_slot_start(offset_in_run(a, info), bin) || c->carried_has(a)) return false;
    Free_slot* s = static_cast<Free_slot*>(p);
    if (holds_link(s)) return false;
    push_free(s, bin);
    return true;
}

__attribute__((always_inline)) inline int Heap::try_free_to_outbox(void* p, const void* current_owner) {
    Chunk* c = Chunk::of(p);
    Heap* to = c->heap;
    const void* owner = to->owner.load(std::memory_order_relaxed);
    // (The header page's map word has no k_small.)
    const uint32_t info = c->map[Chunk::page_of(p)];
    const unsigned bin = small_bin(info);
    if (__builtin_expect(!(info & k_small) || owner == current_owner || !owner || !to->takes_chains, 0) ||
        !g_tuning.batch_remote_frees ||
        !is_slot_start(offset_in_run(reinterpret_cast<uintptr_t>(p), info), bin))
        return -1;
    Outbox_chain& o = outbox[bin];
    if (__builtin_expect(o.to != to, 0)) return -1;  // (restart_chain's, a slow path)
    Free_slot* s = static_cast<Free_slot*>(p);
    if (__builtin_expect(to->holds_link(s), 0)) misuse(Misuse::double_free, p);
    return append_to_chain(o, bin, s, to->key) ? static_cast<int>(bin) + 1 : 0;
}

__attribute__((always_inline)) inline bool Heap::append_to_chain(Outbox_chain& o, unsigned bin, Free_slot* s,
                                                                 uint64_t key) {
    // The chain's fields in registers: the stores into the slot may alias
    // them, as the compiler sees it. In this order, fenced: a signal
    // handler that leaves by siglongjmp abandons the append after any
    // store, and the chain must hold together (a head without its tail
    // would be pushed with a null last link). What it can lose is the block
    // (a free slot leaked) or the count's last step (its heap counts one
    // block in use).
    Free_slot* head = o.head;
    const uint32_t count = o.count + 1;
    s->next = head;
    s->shadow = shadow_with(key, s, head);
    if (!head) o.tail = s;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    o.head = s;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    o.count = count;
    return count >= k_outbox_limit[bin];
}

inline void Heap::push_free(Free_slot* s, size_t bin) {
    Free_slot* head = free_slot[bin];
    s->next = head;
    s->shadow = shadow_of(s, head);
    free_slot[bin] = s;
    count_free(bin_size[bin]);
    small_frees[bin]++;
}

}  // namespace zmm
