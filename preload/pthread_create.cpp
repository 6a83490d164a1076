// pthread_create: what glibc allocates for the new thread (its TLS vector,
// kept with glibc's cache of thread stacks after pthread_join) is glibc's
// bookkeeping, not the program's: it comes from the calling thread's own
// heap, never from a request heap, and is never reported as a leak. (With
// backtraces the loader's frames say so too; this covers ZMM_BACKTRACE=0
// and untraced fast paths.)

#include <cerrno>
#include <pthread.h>

#include "libc_symbols.hpp"
#include "thread_heap.hpp"

using Create_fn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);

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
    int result = real(thread, attr, start, arg);
    if (own) {
        --zmm::t_state.depth;
        zmm::t_heap = saved;
    }
    return result;
}
