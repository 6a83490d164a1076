// A gate for short crossings by any number of threads at once, which one
// thread can close: close() waits for the crossings under way, and none
// starts until open(). Usable before any constructor, reset in a forked
// child. Guards zmm's calls into the loader against fork (loader_guard) and
// the heap's unmaps against a leak scan reading them (os).
//
// The crossings are counted in shards, one cache line each, picked by the
// thread: every traced allocation crosses the loader gate, and one shared
// counter made two threads' captures take turns on its line (two threads
// ran traced allocations no faster than one).
#pragma once

#include <atomic>
#include <cstdint>
#include <sched.h>

namespace zmm {

class Gate {
public:
    // Waits while the gate is closed, calling `while_waiting` (if any) at
    // each turn. Returns the shard to give back to leave(). A crossing must
    // not enter again inside itself: a close() between the two would wait
    // for the outer one while the inner one waits for open().
    unsigned enter(void (*while_waiting)() = nullptr) {
        unsigned k = shard_of_thread();
        for (;;) {
            users_[k].n.fetch_add(1, std::memory_order_seq_cst);
            if (!closed_.load(std::memory_order_seq_cst)) return k;
            users_[k].n.fetch_sub(1, std::memory_order_seq_cst);
            while (closed_.load(std::memory_order_acquire)) {
                if (while_waiting) while_waiting();
                sched_yield();
            }
        }
    }
    void leave(unsigned shard) { users_[shard].n.fetch_sub(1, std::memory_order_release); }

    void close() {
        closed_.store(true, std::memory_order_seq_cst);
        for (auto& u : users_)
            while (u.n.load(std::memory_order_seq_cst) != 0) sched_yield();
    }
    void open() { closed_.store(false, std::memory_order_release); }
    bool is_closed() const { return closed_.load(std::memory_order_acquire); }
    // A forked child: the crossings under way were other threads'.
    void reset() {
        closed_.store(false, std::memory_order_relaxed);
        for (auto& u : users_) u.n.store(0, std::memory_order_relaxed);
    }

private:
    static constexpr unsigned k_shards = 16;
    // Threads take shards in turn, at their first crossing of any gate.
    static unsigned shard_of_thread() {
        static constinit thread_local unsigned t_shard __attribute__((tls_model("initial-exec"))) = ~0u;
        if (__builtin_expect(t_shard == ~0u, 0)) {
            static constinit std::atomic<unsigned> next{0};
            t_shard = next.fetch_add(1, std::memory_order_relaxed) % k_shards;
        }
        return t_shard;
    }
    struct alignas(128) Shard {  // (the adjacent-line prefetcher pairs 64-byte lines)
        std::atomic<int> n{0};
    };
    Shard users_[k_shards];
    alignas(128) std::atomic<bool> closed_{false};
};

}  // namespace zmm
