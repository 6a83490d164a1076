// The leak scan's speed (issue 6): a persistent heap of MIB mebibytes of
// live blocks (an object graph: each block points to the one before it, the
// rest of its words are data), then REQUESTS small requests that each leave
// 10 blocks lost among 1000; zmm_request_end's time is the scan's, as
// ZMM_LEAKS=lost runs it over the whole process.
//
//   bench_scan MIB [REQUESTS]
//
// prints "scan live_mib N end_ms_median X gib_per_s Y" (end_ms: the median
// zmm_request_end; gib_per_s: live persistent heap / that time).
#include <zmm/zmm.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

uint64_t g_rng = 88172645463325252ull;
uint64_t next() {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

volatile uintptr_t g_hidden;

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_scan MIB [REQUESTS]\n");
        return 2;
    }
    size_t mib = strtoull(argv[1], nullptr, 10);
    int requests = argc > 2 ? atoi(argv[2]) : 5;
    static const size_t sizes[] = {32, 48, 64, 96, 128, 256, 512, 1024, 4096, 16384};
    std::vector<void*> live;
    size_t total = 0, want = mib << 20;
    void* prev = nullptr;
    for (size_t i = 0; total < want; ++i) {
        size_t size = sizes[next() % (sizeof sizes / sizeof sizes[0])];
        auto* w = static_cast<uint64_t*>(malloc(size));
        w[0] = reinterpret_cast<uintptr_t>(prev);
        for (size_t k = 1; k < size / 8; ++k) w[k] = next() | (uint64_t{1} << 63);  // data, not pointers
        prev = w;
        live.push_back(w);
        total += size;
    }
    std::vector<double> ms;
    for (int r = 0; r < requests; ++r) {
        zmm_request_begin("scan");
        void* keep[1000];
        for (int i = 0; i < 1000; ++i) {
            keep[i] = malloc(64);
            memset(keep[i], 0, 64);
        }
        for (int i = 0; i < 10; ++i) {
            g_hidden = reinterpret_cast<uintptr_t>(keep[i]) ^ (uintptr_t{1} << 62);
            keep[i] = nullptr;  // lost
        }
        for (int i = 10; i < 1000; ++i) free(keep[i]);
        auto t0 = std::chrono::steady_clock::now();
        zmm_request_end();
        auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    double median = ms.empty() ? 0 : ms[ms.size() / 2];
    printf("scan live_mib %zu end_ms_median %.2f gib_per_s %.2f\n", total >> 20, median,
           median > 0 ? (double(total) / (1 << 30)) / (median / 1000) : 0.0);
    for (void* p : live) free(p);
    return 0;
}
