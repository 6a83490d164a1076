// fuzz_heaps: two threads' heaps (A, B) and thread A's request heap (R),
// with cross-heap frees and reallocs, drain_remote, and request begin/end
// (release_blocks or merge_into), single-threaded (see heap_model.hpp).
#include "heap_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return zmm::fuzz::run(zmm::fuzz::Mode::multi, data, size);
}
