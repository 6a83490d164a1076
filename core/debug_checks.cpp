#include "debug_checks.hpp"

#include <cstring>
#include <new>

#include "format.hpp"
#include "os.hpp"

namespace zmm::debug_checks {
namespace {

Block_table* table_of(Heap& h) {
    if (!h.blocks) {
        void* mem = os::map(sizeof(Block_table));
        if (!mem) return nullptr;
        h.blocks = new (mem) Block_table();
    }
    return h.blocks;
}

// [from, to) of p all `byte`? Returns the first offset that is not, or `to`.
size_t first_not(const unsigned char* p, size_t from, size_t to, unsigned char byte) {
    for (size_t i = from; i < to; ++i)
        if (p[i] != byte) return i;
    return to;
}

}  // namespace

void on_alloc(Heap& h, void* p, size_t size) {
    if (!p) return;
    auto* bytes = static_cast<unsigned char*>(p);
    size_t usable = Heap::usable_size(p);
    // Small slots are reused whole: past the free-list link and its shadow
    // (the first two words) a slot is all poison, freed or new (new runs are
    // poisoned when cut). Page runs are made of pages from several earlier
    // blocks or given back to the OS: they are poisoned, not checked.
    size_t from = 2 * sizeof(void*);
    if (Heap::in_small_run(p)) {
        size_t bad = first_not(bytes, from, usable, k_poison);
        if (bad != usable) {
            char detail[64];
            Text t;
            t.str("at offset ").dec(bad).str(" of ").dec(usable);
            size_t n = t.size() < sizeof detail - 1 ? t.size() : sizeof detail - 1;
            memcpy(detail, t.data(), n);
            detail[n] = 0;
            misuse(Misuse::write_after_free, p, detail);
        }
    }
    memset(bytes + size, k_canary, k_canary_bytes);
    if (Block_table* table = table_of(h)) table->insert({reinterpret_cast<uintptr_t>(p), size, 0, 0});
}

size_t requested_size(void* p, const void* current_owner) {
    Heap* h = Heap::owner_of(p);
    if (h && h->blocks && h->owner.load(std::memory_order_relaxed) == current_owner)
        if (const Block_info* b = h->blocks->find(reinterpret_cast<uintptr_t>(p))) return b->size;
    return Heap::usable_size(p);
}

namespace {
// p, a block of h's being freed: its canary checked from byte `from` of the
// block on (when the table knows its size: a block a request heap left to
// the thread's heap is not in the thread heap's table), then the block
// poisoned from byte `from` (a slot is reused whole: its poison is checked
// when it is handed out again, whatever its history).
void check_and_poison(Heap& h, void* p, size_t from) {
    const Block_info* b = h.blocks ? h.blocks->find(reinterpret_cast<uintptr_t>(p)) : nullptr;
    size_t usable = Heap::usable_size(p);
    auto* bytes = static_cast<unsigned char*>(p);
    if (b && b->size + k_canary_bytes <= usable) {
        size_t start = b->size > from ? b->size : from;
        if (start < b->size + k_canary_bytes &&
            first_not(bytes, start, b->size + k_canary_bytes, k_canary) != b->size + k_canary_bytes)
            misuse(Misuse::overflow, p, "the canary after its last byte was overwritten");
    }
    if (from < usable) memset(bytes + from, k_poison, usable - from);
}
}  // namespace

void on_free(void* p, const void* current_owner) {
    Heap* h = Heap::owner_of(p);
    // Another thread's heap, or one no thread owns (abandoned, orphaned in a
    // forked child): on_drained's, by the owner (an orphan's blocks go
    // unchecked: its table may be mid-update).
    if (!h || !current_owner || h->owner.load(std::memory_order_relaxed) != current_owner) return;
    // A block that holds a free slot's link (freed already: in a free list,
    // or on its way back from another thread, a large or huge block too),
    // or that is not a live block start: the free diagnoses it, and a link
    // must stay.
    if (!is_live(p)) return;
    check_and_poison(*h, p, 0);
}

bool is_live(void* p) {
    // (A block start first: the link's two words are read only there.)
    if (Heap::live_block_size(p) == 0) return false;
    Heap* h = Heap::owner_of(p);
    return !h || !h->holds_link(p);
}

void on_drained(Heap& h, void* p) { check_and_poison(h, p, 2 * sizeof(void*)); }

}  // namespace zmm::debug_checks
