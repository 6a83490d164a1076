// pthread_create: what glibc allocates for the new thread (its TLS vector,
// kept with glibc's cache of thread stacks after pthread_join) is glibc's
// bookkeeping, not the program's: it comes from the calling thread's own
// heap, never from a request heap, and is never reported as a leak. (With
// backtraces the loader's frames say so too; this covers ZMM_BACKTRACE=0
// and untraced fast paths.)

#include <cerrno>
#include <pthread.h>
#include <cstdlib>

#include "libc_symbols.hpp"
#include "thread_heap.hpp"

using Create_fn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);

namespace {

// The new thread takes its heap (and so its place in the thread list that
// the leak scan stops and reads) before the program's start routine runs:
// a thread that never allocates may still hold the only pointer to a block.
struct Start {
    void* (*start)(void*);
    void* arg;
};

void* start_thread_with_heap(void* p) {
    Start s = *static_cast<Start*>(p);
    free(p);
    zmm::thread_heap();  // joins an open process-wide request, as a first malloc would
    return s.start(s.arg);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int pthread_create(pthread_t* thread, const pthread_attr_t* attr,
                                                                    void* (*start)(void*), void* arg) {
    static Create_fn real = nullptr;
    if (!real) real = reinterpret_cast<Create_fn>(zmm::libc::symbol("pthread_create"));
    if (!real) return EAGAIN;
    zmm::Heap* saved = zmm::t_heap;
    zmm::Heap* own = zmm::t_state.request ? zmm::persistent_heap() : nullptr;
    if (own) {
        zmm::t_heap = zmm::fast_path_heap(own);
        ++zmm::t_state.depth;  // slow paths too: the thread's own heap
    }
    Start* wrapped = zmm::bypassed() ? nullptr : static_cast<Start*>(malloc(sizeof(Start)));
    int result;
    if (wrapped) {
        *wrapped = Start{start, arg};
        result = real(thread, attr, start_thread_with_heap, wrapped);
        if (result != 0) free(wrapped);
    } else {
        result = real(thread, attr, start, arg);
    }
    if (own) {
        --zmm::t_state.depth;
        zmm::t_heap = saved;
    }
    return result;
}
