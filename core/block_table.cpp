#include "block_table.hpp"

#include "os.hpp"

namespace zmm {

bool Block_table::grow() {
    size_t capacity = capacity_ ? capacity_ * 2 : 4096;
    auto* slots = static_cast<Block_info*>(os::map(bytes_for(capacity)));
    if (!slots) return false;
    Block_info* old = slots_;
    uint64_t* old_used = used_;
    size_t old_capacity = capacity_;
    slots_ = slots;
    used_ = reinterpret_cast<uint64_t*>(slots + capacity);
    capacity_ = capacity;
    shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(capacity));
    count_ = 0;
    for (size_t w = 0; w < old_capacity / 64; ++w)  // (the old table's bits: for_each_used walks the new)
        for (uint64_t bits = old_used[w]; bits; bits &= bits - 1)
            insert(old[w * 64 + static_cast<size_t>(__builtin_ctzll(bits))]);
    if (old) os::unmap(old, bytes_for(old_capacity));
    return true;
}

bool Block_table::insert(const Block_info& info) {
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

const Block_info* Block_table::find(uintptr_t p) const {
    if (!count_) return nullptr;
    size_t mask = capacity_ - 1;
    for (size_t i = index_of(p);; i = (i + 1) & mask) {
        if (slots_[i].address == p) return &slots_[i];
        if (slots_[i].address == 0) return nullptr;
    }
}

bool Block_table::erase(uintptr_t p, Block_info* was) {
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

void Block_table::clear() {
    for_each_used([&](size_t i) { slots_[i] = Block_info{}; });
    for (size_t w = 0; w < capacity_ / 64; ++w) used_[w] = 0;
    count_ = 0;
}

void Block_table::release() {
    if (slots_) os::unmap(slots_, bytes_for(capacity_));
    slots_ = nullptr;
    used_ = nullptr;
    capacity_ = count_ = 0;
    shift_ = 64;
}

}  // namespace zmm
