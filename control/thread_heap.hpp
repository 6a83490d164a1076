// Which heap serves the calling thread. The pointer lives in initial-exec TLS
// (static TLS of the preloaded library: it exists before the first malloc and
// reading it is one instruction pair, no __tls_get_addr, no allocation).
//
// &g_empty_heap means "no heap yet": the thread's first allocation, a thread
// whose heap was abandoned at exit, or zmm bypassed (ZMM_ALLOC=0). The empty
// heap sends every allocation to the slow path, so the hot path tests nothing.
#pragma once

#include "heap.hpp"

namespace zmm {

extern constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec")));

// The identity of the calling thread for heap ownership: the address of one of
// its TLS variables (unique among live threads, stable across fork in the
// forking thread, needs no system call).
const void* thread_token();

// The calling thread's heap, acquiring one (and starting zmm) if needed;
// nullptr when zmm is bypassed or the OS has no memory for a heap.
Heap* thread_heap();

// Has start-up read the options and decided between zmm and bypass?
bool bypassed();

}  // namespace zmm
