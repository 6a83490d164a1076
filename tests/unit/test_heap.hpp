// A heap for one test, owned by the calling thread, released at the end.
#pragma once

#include "heap.hpp"

namespace zmm::test {

struct Test_heap {
    alignas(64) Heap heap;
    char token = 0;  // this heap's owner identity
    Test_heap() {
        heap.init(0x5bd1e9955bd1e995ull);
        heap.owner.store(&token);
    }
    ~Test_heap() { heap.release_all(); }
    Test_heap(const Test_heap&) = delete;
    Test_heap& operator=(const Test_heap&) = delete;
    Heap* operator->() { return &heap; }
};

// Deterministic pseudo-random numbers (xorshift), the same on every run.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed | 1) {}
    uint64_t next() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

}  // namespace zmm::test
