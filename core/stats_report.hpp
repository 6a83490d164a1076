// ZMM_STATS: the heap statistics of the whole process, written without
// allocating (every heap's counters, summed under the pool lock).
#pragma once

namespace zmm {

void write_stats_report(int fd);

}  // namespace zmm
