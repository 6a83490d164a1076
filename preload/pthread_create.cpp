// pthread_create: what glibc allocates for the new thread (its TLS vector,
// kept with glibc's cache of thread stacks after pthread_join) is glibc's
// bookkeeping, not the program's: it comes from the calling thread's own
// heap, never from a request heap, and is never reported as a leak. (With
// backtraces the loader's frames say so too; this covers ZMM_BACKTRACE=0
// and untraced fast paths.)

#include <cerrno>
#include <pthread.h>
#include <cstdlib>

#include "fast_unwind.hpp"
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
    // The thread's stack, for the unwinder: the program's own block
    // (pthread_attr_setstack), else the size of the one glibc maps.
    uintptr_t user_stack;
    size_t stack_size;
    size_t guard_size;
};

void* start_thread_with_heap(void* p) {
    Start s = *static_cast<Start*>(p);
    free(p);
    if (s.user_stack) {
        zmm::fast_unwind::note_thread_stack(s.user_stack, s.user_stack + s.stack_size);
    } else if (s.stack_size) {
        // glibc's block: [guard][stack, static TLS][thread block], the
        // thread pointer at the thread block, under a page from the block's
        // end. Above the guard and a page of slack, all of it is stack.
        uintptr_t tp = reinterpret_cast<uintptr_t>(__builtin_thread_pointer());
        uintptr_t lo = tp - s.stack_size + s.guard_size + 4096;
        if (s.stack_size > s.guard_size + 8192) zmm::fast_unwind::note_thread_stack(lo, tp);
    }
    zmm::thread_heap();  // joins an open process-wide request, as a first malloc would
    return s.start(s.arg);
}

// The new thread's stack as `attr` (or glibc's default) describes it.
void describe_stack(const pthread_attr_t* attr, Start& s) {
    pthread_attr_t defaults;
    if (!attr) {
        if (pthread_getattr_default_np(&defaults) != 0) return;
        attr = &defaults;
    }
    void* addr = nullptr;
    size_t size = 0, guard = 0;
    if (pthread_attr_getstack(attr, &addr, &size) == 0 && pthread_attr_getguardsize(attr, &guard) == 0) {
        // (Without a stack of the program's, glibc's answer is 0 - size.)
        uintptr_t a = reinterpret_cast<uintptr_t>(addr);
        s.user_stack = a != 0 && a + size != 0 ? a : 0;
        s.stack_size = size;
        s.guard_size = guard;
    }
    if (attr == &defaults) pthread_attr_destroy(&defaults);
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
        *wrapped = Start{start, arg, 0, 0, 0};
        describe_stack(attr, *wrapped);
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
