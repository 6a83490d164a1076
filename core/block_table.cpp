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

const Block_info* Block_table::find(uintptr_t p) const {
    if (!count_) return nullptr;
    size_t mask = capacity_ - 1;
    for (size_t i = index_of(p);; i = (i + 1) & mask) {
        if (slots_[i].address == p) return &slots_[i];
        if (slots_[i].address == 0) return nullptr;
    }
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
