// A spin lock that yields: for the few process-wide structures (the heap
// pool, the internal arena), taken rarely and held briefly. Unlike a pthread
// mutex it needs no initialisation (usable before any constructor) and can
// be reset in a forked child.
#pragma once

#include <atomic>
#include <sched.h>

namespace zmm {

class Spin_lock {
public:
    void lock() {
        while (flag_.exchange(true, std::memory_order_acquire))
            while (flag_.load(std::memory_order_relaxed)) sched_yield();
    }
    bool try_lock() { return !flag_.exchange(true, std::memory_order_acquire); }
    void unlock() { flag_.store(false, std::memory_order_release); }
    void reset() { flag_.store(false, std::memory_order_relaxed); }

private:
    std::atomic<bool> flag_{false};
};

struct Lock_guard {
    explicit Lock_guard(Spin_lock& l) : lock(l) { lock.lock(); }
    ~Lock_guard() { lock.unlock(); }
    Lock_guard(const Lock_guard&) = delete;
    Lock_guard& operator=(const Lock_guard&) = delete;
    Spin_lock& lock;
};

}  // namespace zmm
