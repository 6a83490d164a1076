// The reentry heap and the way back from a handler left by siglongjmp
// (reentry.hpp).

#include "reentry.hpp"

#include <cerrno>
#include <cstring>

#include "debug_checks.hpp"
#include "heap_pool.hpp"
#include "options.hpp"
#include "spin_lock.hpp"

namespace zmm {

namespace {

// The reentry heap: made at start-up, never pooled.
Spin_lock g_reentry_lock;
Heap* g_reentry = nullptr;
const void* const k_reentry_idle = reinterpret_cast<const void*>(3);  // a marker (heap_pool::is_thread_token)

// The reentry heap, owned by the calling thread, with signals blocked.
class Reentry_scope {
public:
    Reentry_scope() {
        g_reentry_lock.lock();
        if (g_reentry) {
            g_reentry->owner.store(thread_token(), std::memory_order_release);
            g_reentry->drain_remote();  // its blocks freed from outside
        }
    }
    ~Reentry_scope() {
        if (g_reentry) g_reentry->owner.store(k_reentry_idle, std::memory_order_release);
        g_reentry_lock.unlock();
    }
    Reentry_scope(const Reentry_scope&) = delete;
    Reentry_scope& operator=(const Reentry_scope&) = delete;
    Heap* heap() const { return g_reentry; }

private:
    os::Signals_blocked quiet_;  // first: held across the lock
};

}  // namespace

namespace reentry {

bool still_inside() {
    if (t_state.handler_depth == 0) return true;
    uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    // Only handlers run on the alternate stack; on the thread's stack,
    // handler frames are below the frame they interrupted.
    if (here >= t_state.handler_alt_lo && here < t_state.handler_alt_hi) return true;
    bool handler_on_alt = t_state.handler_frame >= t_state.handler_alt_lo && t_state.handler_frame < t_state.handler_alt_hi;
    if (!handler_on_alt && here <= t_state.handler_frame) return true;
    // Left by siglongjmp, to the program's code: outside any allocator call
    // (one the handler interrupted was abandoned with it). The heap is
    // derived again from what the thread holds, not restored: a request may
    // have switched meanwhile.
    t_state.handler_depth = 0;
    t_state.in_allocator = 0;
    t_state.busy = 0;
    if (t_state.tool_heap) {
        t_heap = fast_path_heap(t_state.tool_heap);
    } else if (t_state.request) {
        t_heap = &g_empty_heap;  // the slow path checks the request, and traces
    } else {
        t_heap = t_state.persistent ? fast_path_heap(t_state.persistent) : &g_empty_heap;
    }
    return false;
}

void* alloc(size_t size, size_t alignment, bool zeroed) {
    Reentry_scope scope;
    Heap* h = scope.heap();
    if (!h) {
        errno = ENOMEM;
        return nullptr;
    }
    if (zeroed) return h->alloc_zeroed(size);
    return alignment ? h->alloc_aligned(alignment, size) : h->alloc(size);
}

bool free(void* p) {
    Heap* owner = Heap::owner_of(p);
    if (!owner) return false;
    // (The thread's heaps may be mid-update: their owner, this thread,
    // checks a block of theirs as it drains it from the remote stack.)
    if (options().debug) debug_checks::on_free(p, nullptr);
    if (owner == g_reentry) {
        Reentry_scope scope;
        Heap::free_any(p, thread_token());
    } else {
        Heap::free_remote(owner, p);  // drained by its owner, even when that is this thread
    }
    return true;
}

void* realloc(void* p, size_t size) {
    void* q = alloc(size, 0, false);
    if (!q) return nullptr;
    size_t old = Heap::usable_size(p);
    memcpy(q, p, old < size ? old : size);
    free(p);
    return q;
}

void start() { g_reentry = heap_pool::new_request_heap(k_reentry_idle); }

void before_fork() { g_reentry_lock.lock(); }
void after_fork_parent() { g_reentry_lock.unlock(); }
void after_fork_child() { g_reentry_lock.reset(); }

}  // namespace reentry

}  // namespace zmm
