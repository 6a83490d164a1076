#include "stats_report.hpp"

#include <unistd.h>

#include "format.hpp"
#include "heap_pool.hpp"

namespace zmm {

void write_stats_report(int fd) {
    Heap_stats s;
    heap_pool::total_stats(s);
    Text t;
    t.set_fd(fd);
    t.str("zmm: heap statistics (pid ").dec(static_cast<uint64_t>(getpid())).str(", ")
        .dec(heap_pool::heaps_count()).str(" heaps)\n");
    t.str("  bin   size     allocations       in use\n");
    for (unsigned b = 0; b < k_bins; ++b) {
        if (s.small_allocs[b] == 0 && s.small_in_use[b] == 0) continue;
        t.str("  ").dec_padded(b, 3).str(" ").dec_padded(k_bin_size[b], 6)
            .str(" ").dec_padded(s.small_allocs[b], 14).str(" ").dec_padded(s.small_in_use[b], 12).chr('\n');
    }
    t.str("  large runs: ").dec(s.large_allocs).str(" allocations, ").bytes_human(s.large_in_use_bytes).str(" in use\n");
    t.str("  huge blocks: ").dec(s.huge_allocs).str(" allocations, ").bytes_human(s.huge_in_use_bytes).str(" in use\n");
    t.str("  allocated ").dec(s.bytes_allocated).str(" B, freed ").dec(s.bytes_freed)
        .str(" B, in use ").dec(s.size).str(" B, peak ").dec(s.peak).str(" B (sum of per-heap peaks)\n");
    t.str("  mapped ").dec(s.real_size).str(" B (peak ").dec(s.real_peak).str(" B), chunks mapped ")
        .dec(s.chunks).str(", chunks cached ").dec(s.cached_chunks).chr('\n');
    t.str("  returned to the OS: ").dec(s.unmapped_bytes).str(" B unmapped, ").dec(s.purged_bytes)
        .str(" B purged\n");
    t.flush(fd);
}

}  // namespace zmm
