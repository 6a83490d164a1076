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
    if (usable <= k_max_small) {
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

size_t requested_size(void* p) {
    Heap* h = Heap::owner_of(p);
    if (h && h->blocks)
        if (const Block_info* b = h->blocks->find(reinterpret_cast<uintptr_t>(p))) return b->size;
    return Heap::usable_size(p);
}

void on_free(void* p) {
    Heap* h = Heap::owner_of(p);
    if (!h || !h->blocks) return;  // not a block start: the free diagnoses it
    const Block_info* b = h->blocks->find(reinterpret_cast<uintptr_t>(p));
    if (!b) return;  // not live (a double free): the free diagnoses it, and its link must stay
    // Freed already by another thread, still on its way back (the owner's
    // table forgets it when it drains): it holds a free slot's link, under
    // the owner's key. A double free, which the free diagnoses.
    auto* s = static_cast<Free_slot*>(p);
    if (s->shadow == h->shadow_of(s, s->next)) return;
    size_t usable = Heap::usable_size(p);
    auto* bytes = static_cast<unsigned char*>(p);
    if (b->size + k_canary_bytes <= usable &&
        first_not(bytes, b->size, b->size + k_canary_bytes, k_canary) != b->size + k_canary_bytes)
        misuse(Misuse::overflow, p, "the canary after its last byte was overwritten");
    memset(bytes, k_poison, usable);
}

}  // namespace zmm::debug_checks
