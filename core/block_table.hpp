// The blocks of a traced request heap: address → (requested size, stack id),
// out of line (the block itself carries nothing). Open addressing with linear
// probing and backward-shift deletion, in memory from the OS, never from the
// program's malloc. One owner thread at a time, like its heap.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zmm {

struct Block_info {
    uintptr_t address;  // 0: empty slot
    uint64_t size;      // the size the program asked for
    uint32_t stack;     // stack depot id (0: none captured)
    uint32_t flags;
};

inline constexpr uint32_t k_block_runtime = 1;  // allocated by the C runtime for itself: never a leak
inline constexpr uint32_t k_block_reported = 2;  // reported as a leak by an earlier request, still live
// In an untraced request heap's table: a block earlier requests left live
// (carried), never one of the request running (whose table holds nothing
// else, or every block's requested size under ZMM_DEBUG).
inline constexpr uint32_t k_block_carried = 4;
// Found lost by a scan that ran (and reported): the scans of its thread's own
// requests neither list it as a candidate nor read it as a root, unless they
// find a pointer to it again (Reachability::leave_out_lost), which clears it.
inline constexpr uint32_t k_block_lost = 8;

class Block_table {
public:
    Block_table() = default;
    Block_table(const Block_table&) = delete;
    Block_table& operator=(const Block_table&) = delete;
    ~Block_table() { release(); }

    // false when the OS refuses memory to grow the table (the block is then
    // simply not traced).
    bool insert(const Block_info& info);
    // Forgets p; returns whether it was there (and its entry, in `was`).
    bool erase(uintptr_t p, Block_info* was = nullptr);
    const Block_info* find(uintptr_t p) const;
    // p's first slot, asked of the cache ahead of an insert or erase (a
    // miss: the table is hashed at random). (An asm statement: g++ 12
    // drops a __builtin_prefetch inside a function inlined into another,
    // as a call without effect.)
    void prefetch(uintptr_t p) const {
        if (!slots_) return;
#if defined(__x86_64__)
        asm volatile("prefetchw (%0)" : : "r"(&slots_[index_of(p)]));  // (a NOP where the CPU lacks it)
#else
        __builtin_prefetch(&slots_[index_of(p)], 1);
#endif
    }
    Block_info* find(uintptr_t p) {
        return const_cast<Block_info*>(static_cast<const Block_table*>(this)->find(p));
    }
    size_t size() const { return count_; }
    void clear();
    void release();

    // (By the occupancy bits: a request's end walks a table its teardown
    // emptied, a few entries in 16384 slots, in 2 KiB instead of 384 KiB.)
    template <class F>
    void for_each(F f) const {
        for_each_used([&](size_t i) { f(static_cast<const Block_info&>(slots_[i])); });
    }
    // May change the values (not the addresses) of the entries.
    template <class F>
    void for_each_mutable(F f) {
        for_each_used([&](size_t i) { f(slots_[i]); });
    }

private:
    // f(i) for every slot i in use.
    template <class F>
    void for_each_used(F f) const {
        for (size_t w = 0; w < capacity_ / 64; ++w)
            for (uint64_t bits = used_[w]; bits; bits &= bits - 1) f(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
    }
    bool grow();
    static size_t bytes_for(size_t capacity) { return capacity * sizeof(Block_info) + capacity / 8; }
    void set_used(size_t i) { used_[i / 64] |= uint64_t{1} << (i % 64); }
    void clear_used(size_t i) { used_[i / 64] &= ~(uint64_t{1} << (i % 64)); }
    size_t index_of(uintptr_t p) const {
        uint64_t h = (p >> 4) * 0x9E3779B97F4A7C15ull;
        return static_cast<size_t>(h >> shift_);
    }
    Block_info* slots_ = nullptr;
    uint64_t* used_ = nullptr;  // a bit per slot, set while it holds an entry (after the slots)
    size_t capacity_ = 0;  // a power of two, at least 64
    size_t count_ = 0;
    unsigned shift_ = 64;
};

// Inline: a traced allocation inserts, its free erases (the request's hot
// path; the growth stays out of line).
inline bool Block_table::insert(const Block_info& info) {
    if ((count_ + 1) * 2 > capacity_ && !grow()) return false;
    size_t mask = capacity_ - 1;
    for (size_t i = index_of(info.address);; i = (i + 1) & mask) {
        if (slots_[i].address == info.address) {
            slots_[i] = info;
            return true;
        }
        if (slots_[i].address == 0) {
            slots_[i] = info;
            set_used(i);
            ++count_;
            return true;
        }
    }
}

inline bool Block_table::erase(uintptr_t p, Block_info* was) {
    if (!count_) return false;
    size_t mask = capacity_ - 1;
    size_t i = index_of(p);
    for (;; i = (i + 1) & mask) {
        if (slots_[i].address == p) break;
        if (slots_[i].address == 0) return false;
    }
    if (was) *was = slots_[i];
    // Backward shift: pull later entries of the probe run into the hole.
    size_t hole = i;
    for (size_t j = (i + 1) & mask; slots_[j].address; j = (j + 1) & mask) {
        size_t home = index_of(slots_[j].address);
        bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            slots_[hole] = slots_[j];
            hole = j;
        }
    }
    slots_[hole] = Block_info{};
    clear_used(hole);  // (the slots moved into were in use already)
    --count_;
    return true;
}

}  // namespace zmm
