// Between request.cpp (one thread's requests) and process_request.cpp (the
// process-wide request made of every thread's share).
#pragma once

#include <atomic>
#include <cstdint>

#include "leak_report.hpp"
#include "mapped_array.hpp"
#include "request.hpp"
#include "thread_heap.hpp"

namespace zmm {

extern std::atomic<uint64_t> g_next_id;
extern std::atomic<uint64_t> g_leaky_requests;

size_t thread_limit();

struct Depth_guard {
    Depth_guard() { ++t_state.depth; }
    ~Depth_guard() { --t_state.depth; }
};

using Leak_list = Mapped_array<Leak>;

struct Share_totals {
    size_t usage, peak, real_usage, real_peak;
};

// Starts a request on the calling thread (its share, for a process-wide one).
Request* begin_on_thread(const char* name, bool process_wide);
// Ends the calling thread's request: its live blocks are appended to `into`
// (or reported at once when null), its figures added to `totals` if given.
// Returns the number of leaks, -1 without a request. Async-signal-safe when
// the thread was interrupted outside the allocator and `into` is given.
long end_on_thread(Leak_list* into, Share_totals* totals);

}  // namespace zmm
