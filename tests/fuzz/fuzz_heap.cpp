// fuzz_heap: one zmm::Heap driven by the input (see heap_model.hpp); thread
// B owns no heap, so its frees go onto the heap's remote stack.
#include "heap_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return zmm::fuzz::run(zmm::fuzz::Mode::single, data, size);
}
