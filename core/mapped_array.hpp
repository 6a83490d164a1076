// A growing array in memory from the OS (os::map_unzeroed: items are written
// before they are read), never from the program's malloc: for zmm's own
// lists (leaks gathered at a request's end, the mappings a leak scan
// reads). Doubles when full; push is async-signal-safe (a share of a
// process-wide request ends in a signal handler). A plain value: copying it
// copies the handle, release() gives the memory back.
#pragma once

#include <cstddef>
#include <cstring>

#include "os.hpp"

namespace zmm {

template <class T, size_t First = 1024>
struct Mapped_array {
    T* items = nullptr;
    size_t count = 0, capacity = 0;

    // false (and nothing added) when the OS refuses memory to grow.
    bool push(const T& item) {
        if (count == capacity) {
            size_t cap = capacity ? capacity * 2 : First;
            auto* bigger = static_cast<T*>(os::map_unzeroed(cap * sizeof(T)));
            if (!bigger) return false;
            if (items) {
                memcpy(static_cast<void*>(bigger), items, count * sizeof(T));
                os::unmap(items, capacity * sizeof(T));
            }
            items = bigger;
            capacity = cap;
        }
        items[count++] = item;
        return true;
    }

    void release() {
        if (items) os::unmap(items, capacity * sizeof(T));
        items = nullptr;
        count = capacity = 0;
    }
};

}  // namespace zmm
