// A gate for short crossings by any number of threads at once, which one
// thread can close: close() waits for the crossings under way, and none
// starts until open(). Two atomics: usable before any constructor, reset in
// a forked child. Guards zmm's calls into the loader against fork
// (loader_guard) and the heap's unmaps against a leak scan reading them (os).
#pragma once

#include <atomic>
#include <sched.h>

namespace zmm {

class Gate {
public:
    // Waits while the gate is closed, calling `while_waiting` (if any) at
    // each turn. Nests.
    void enter(void (*while_waiting)() = nullptr) {
        for (;;) {
            users_.fetch_add(1, std::memory_order_seq_cst);
            if (!closed_.load(std::memory_order_seq_cst)) return;
            users_.fetch_sub(1, std::memory_order_seq_cst);
            while (closed_.load(std::memory_order_acquire)) {
                if (while_waiting) while_waiting();
                sched_yield();
            }
        }
    }
    void leave() { users_.fetch_sub(1, std::memory_order_release); }

    void close() {
        closed_.store(true, std::memory_order_seq_cst);
        while (users_.load(std::memory_order_seq_cst) != 0) sched_yield();
    }
    void open() { closed_.store(false, std::memory_order_release); }
    // A forked child: the crossings under way were other threads'.
    void reset() {
        closed_.store(false, std::memory_order_relaxed);
        users_.store(0, std::memory_order_relaxed);
    }

private:
    std::atomic<int> users_{0};
    std::atomic<bool> closed_{false};
};

}  // namespace zmm
