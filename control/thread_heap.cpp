// Which heap serves each thread: start-up, the thread's own heap, thread
// exit and fork. Requests (request.cpp) switch the heap a thread allocates
// from; everything else asks here.
//
// Start-up may happen inside the first malloc of the process, before any
// constructor ran: it reads the options by scanning environ (no getenv) and
// calls nothing that allocates.

#include "thread_heap.hpp"

#include "spin_lock.hpp"

#include <atomic>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "diag.hpp"
#include "heap_pool.hpp"
#include "leak_scan.hpp"
#include "loader_guard.hpp"
#include "options.hpp"
#include "os.hpp"
#include "process_request.hpp"
#include "reentry.hpp"
#include "request.hpp"
#include "symbolize.hpp"
#include "stack_depot.hpp"

extern char** environ;

namespace zmm {

constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec"))) = &g_empty_heap;
constinit thread_local Thread_state t_state __attribute__((tls_model("initial-exec"))) = {};

namespace {

enum State : int { not_started = 0, starting = 1, started = 2 };
std::atomic<int> g_state{not_started};
bool g_options_loaded = false;
bool g_bypass = false;
pthread_key_t g_exit_key;
bool g_exit_key_ok = false;
// Frees into other heaps after which a thread keeps the heap it was given
// (take_heap_of): a consumer that only frees live threads' blocks stops
// asking, and paying a call for it, after as many.
constexpr int k_exchange_tries = 1024;

void apply_options() {
    const Options& o = options();
    g_bypass = !o.alloc;
    g_tuning.huge_pages = o.huge_pages;
    g_tuning.fork_rekey = o.fork_rekey;
    g_tuning.cached_chunks = o.cache_chunks;
    g_tuning.dirty_budget_pages = o.purge_budget / k_page_size;
    g_tuning.poison_new_runs = o.debug;
    g_tuning.batch_remote_frees = !o.debug;  // every free reaches its heap's table at once
    g_tuning.check_remote_frees = o.debug;
    set_report_path(o.log_path.text[0] ? o.log_path.text : nullptr);
}

void on_thread_exit(void* heap) {
    // Other destructors may still allocate after this one: they get a heap
    // again through the slow path (and this destructor runs again).
    {
        Busy_section busy;  // the heaps change: a handler's allocation goes elsewhere
        thread_leaves_requests();
    }
    Heap* h = static_cast<Heap*>(heap);
    if (h && h == t_state.persistent) {
        // The pool's lock is held and the thread has no heap: a handler
        // that allocated here would wait for its own thread (as at set-up).
        os::Signals_blocked quiet;
        t_heap = &g_empty_heap;
        t_state.persistent = nullptr;
        heap_pool::abandon(h);
    }
}

// The tool heap (Tool_scope): made on first use, never pooled.
Spin_lock g_tool_lock;
Heap* g_tool = nullptr;
const void* const k_tool_idle = reinterpret_cast<const void*>(2);  // a marker (heap_pool::is_thread_token)

// Every lock of zmm's is taken before fork() and released (parent) or reset
// (child) after, so that no child inherits one held by a thread that is not
// there. The order is the order they nest in: the scan's, the thread list's,
// the tool heap's, the reentry heap's, the symbolizer's, the stack depot's;
// then zmm's calls into the loader finish (their holders may hold any of
// the above, never the reverse; glibc does not reset the loader's own locks
// in the child); last the heap pool's (the others may allocate).
//
// Signals stay blocked from the first lock taken to the last one released
// or reset: the kernel may restart fork() to run a handler in between, on
// this thread, and a handler's allocation would wait for a lock this thread
// holds (the reentry heap's). Pending signals come after (in the parent;
// the child starts with none, as POSIX says).
thread_local sigset_t t_mask_before_fork;

void before_fork() {
    sigset_t all;
    sigfillset(&all);
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, &t_mask_before_fork, _NSIG / 8);
    leak_scan::before_fork();
    process_request::before_fork();
    g_tool_lock.lock();
    reentry::before_fork();
    symbolize::before_fork();
    stack_depot::before_fork();
    loader::before_fork();
    heap_pool::before_fork();
    carried_bits_pool::before_fork();
}
void after_fork_parent() {
    carried_bits_pool::after_fork_parent();
    heap_pool::after_fork_parent();
    loader::after_fork_parent();
    stack_depot::after_fork_parent();
    symbolize::after_fork_parent();
    reentry::after_fork_parent();
    g_tool_lock.unlock();
    process_request::after_fork_parent();
    leak_scan::after_fork_parent();
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &t_mask_before_fork, nullptr, _NSIG / 8);
}
void after_fork_child() {
    carried_bits_pool::after_fork_child();
    heap_pool::after_fork_child(thread_token());
    loader::after_fork_child();
    stack_depot::after_fork_child();
    symbolize::after_fork_child();
    os::reset_heap_mappings_hold();
    leak_scan::after_fork_child();
    // The tool heap was idle at the fork (its lock was held here), and its
    // marker owner is not a thread's: it stays as it is.
    g_tool_lock.reset();
    reentry::after_fork_child();
    process_request::after_fork_child();
    // A request open across the fork is the child's thread's now (its
    // report named the parent's thread).
    if (t_state.request) t_state.request->tid = os::thread_id();
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &t_mask_before_fork, nullptr, _NSIG / 8);
}

void start_once() {
    int expected = not_started;
    if (!g_state.compare_exchange_strong(expected, starting, std::memory_order_acq_rel)) {
        // Another thread is starting zmm: wait for it (start-up is short).
        while (g_state.load(std::memory_order_acquire) != started) sched_yield();
        return;
    }
    g_options_loaded = load_options(environ);
    apply_options();
    if (!g_bypass) reentry::start();
    g_exit_key_ok = pthread_key_create(&g_exit_key, on_thread_exit) == 0;
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    g_state.store(started, std::memory_order_release);
}

}  // namespace

Heap* fast_path_heap(Heap* h) { return options().debug ? &g_empty_heap : h; }

void start() {
    if (g_state.load(std::memory_order_acquire) != started) start_once();
}

void start_again_with_environment() {
    start();
    if (!g_options_loaded && environ) {
        g_options_loaded = load_options(environ);
        apply_options();
    }
}

bool bypassed() {
    start();
    return g_bypass;
}

Heap* persistent_heap() {
    if (Heap* h = t_state.persistent) return h;
    if (bypassed()) return nullptr;
    // Signals wait while the pool's lock is held and the heap is not yet the
    // thread's: a handler that allocates (undefined, yet common) would
    // otherwise spin on the lock its own thread holds. Once per thread.
    Heap* h;
    {
        os::Signals_blocked quiet;
        h = heap_pool::acquire(thread_token());
        if (h) t_state.persistent = h;
    }
    if (!h) return nullptr;
    t_state.allocations_at_acquire = h->allocations();
    t_state.exchange_tries = k_exchange_tries;
    if (t_heap == &g_empty_heap && !t_state.request) t_heap = fast_path_heap(h);
    if (g_exit_key_ok) pthread_setspecific(g_exit_key, h);
    // Every thread with a heap is listed: the process-wide request signals
    // them, the leak scan stops them and reads their stacks.
    uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    t_state.stack_hint = here;
    process_request::register_thread();
    return h;
}

void take_heap_of(void* p) {
    if (--t_state.exchange_tries <= 0) return;
    // (A live thread's heap, the common case, first: one load of p's chunk
    // header, which the free reads anyway. It may be another new thread's
    // that will give it back to the pool soon.)
    Heap* wanted = Chunk::of(p)->heap;
    if (wanted->owner.load(std::memory_order_relaxed) != nullptr) return;
    // A thread that ever ran a request keeps its heap: its request heap is
    // retired in it (and its next request's), and must not go to the pool
    // with it. (Its allocations there are not the heap's own.)
    Heap* mine = t_state.persistent;
    if (!mine || t_state.request_heap || t_state.spare || mine->allocations() != t_state.allocations_at_acquire) {
        t_state.exchange_tries = 0;
        return;
    }
    bool taken = false;
    {
        os::Signals_blocked quiet;  // the pool's lock (as persistent_heap)
        // Asked with signals blocked: a process-wide request's switch may
        // send the thread to the slow path (t_heap) at any time before.
        if (t_heap == fast_path_heap(mine) && !t_state.request)
            taken = heap_pool::exchange(mine, wanted, thread_token());
        if (taken) {
            t_state.persistent = wanted;
            t_heap = fast_path_heap(wanted);
        }
    }
    // One exchange at most. Not taken: a request's switch came meanwhile, or
    // `wanted` left the pool meanwhile (another new thread's now), was never
    // in it (a retired request heap of a thread that left) or waits deeper
    // in it than the pool looks.
    t_state.exchange_tries = 0;
    if (taken && g_exit_key_ok) pthread_setspecific(g_exit_key, wanted);
}

Tool_scope::Tool_scope() {
    if (t_state.tool_depth++ > 0 || bypassed()) return;
    g_tool_lock.lock();
    if (!g_tool) {
        g_tool = heap_pool::new_request_heap(k_tool_idle);
        if (g_tool) g_tool->internal = true;
    }
    if (!g_tool) {
        g_tool_lock.unlock();
        return;
    }
    g_tool->owner.store(thread_token(), std::memory_order_release);
    saved_ = t_heap;
    t_heap = fast_path_heap(g_tool);
    t_state.tool_heap = g_tool;
    // The thread's own heaps are left as they were: what runs in the scope
    // allocates from the tool heap, and is inside the allocator again only
    // once it enters it.
    saved_in_allocator_ = t_state.in_allocator;
    t_state.in_allocator = 0;
    active_ = true;
}

Tool_scope::~Tool_scope() {
    if (active_) {
        t_state.in_allocator = saved_in_allocator_;
        t_heap = saved_;
        t_state.tool_heap = nullptr;
        g_tool->owner.store(k_tool_idle, std::memory_order_release);
        g_tool_lock.unlock();
    }
    --t_state.tool_depth;
}

Heap* thread_heap() {
    if (Heap* h = t_heap; h != &g_empty_heap) {
        if (__builtin_expect(!process_request::missed_switch(), 1)) return h;
        // As the switch would have: this slow path joins, or ends the share.
        Handler_scope::send_to_slow_path();
    }
    if (Heap* tool = t_state.tool_heap) return tool;
    Heap* p = persistent_heap();
    if (!p) return nullptr;
    if (Heap* r = request_heap_for_thread()) return r;
    return p;
}

}  // namespace zmm
