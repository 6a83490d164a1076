// What the dynamic loader unloaded since zmm started watching: the
// executable segments of objects gone (where other code may be now), for
// the unwinders and the stack depot, whose knowledge of code addresses an
// unload makes stale (backtrace::check_unloads), and the loader's own
// counts of loads and unloads. No allocation; the lock inside is only ever
// held inside a loader::Use, so fork() never leaves it held in the child.
#pragma once

#include <cstdint>

namespace zmm::loader_watch {

// The loader's counts of objects loaded and unloaded (dlpi_adds,
// dlpi_subs). Inside a loader::Use.
struct Counts {
    unsigned long long loads = 0, unloads = 0;
};
Counts counts();

// The first look: the objects mapped now. Inside a loader::Use, before any
// capture that through() is asked about.
void start();

// A look: the objects mapped now, against those of the last look; the
// segments gone, or another object's now, join the unloaded ones. Inside a
// loader::Use. Returns whether any object was unloaded since the last look
// recorded with seen(), and then `*unloads` is the count to record once
// what depends on it is forgotten: until then another thread's look finds
// the unload too, instead of nothing new.
bool look(unsigned long long* unloads);
void seen(unsigned long long unloads);  // inside a loader::Use

// Has this stack been through the executable segment of an object unloaded
// since start()? Any stack, once more segments were mapped or unloaded than
// the tables hold (overflowed()). No lock.
bool through(const uintptr_t* pcs, unsigned n);
bool overflowed();

}  // namespace zmm::loader_watch
