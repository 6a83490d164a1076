// sizemix ITERATIONS: every size class at once. A table of 2000 live blocks;
// each iteration replaces or grows a random one:
//   89.9%  a new small block, its bin drawn uniformly from the 30 ZendMM bins
//          (8 ... 3072 B) and its size uniformly inside the bin;
//    7%    realloc growth of the slot's block by 1.5x (string/vector
//          building), crossing bins and then into large runs; past 1.9 MiB
//          the slot starts small again;
//    3%    a large run, 4 KiB - 1.9 MiB, log-uniform (small runs are common);
//    0.1%  a huge block, 2.1 - 4 MiB (its own mapping in most allocators).
// Every page of every block is touched, so the RSS column means something.
#include <cmath>

#include "bench.hpp"

namespace {
constexpr std::size_t kBins[30] = {8,   16,  24,  32,  40,  48,  56,   64,   80,   96,
                                   112, 128, 160, 192, 224, 256, 320,  384,  448,  512,
                                   640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072};
constexpr std::size_t kSlots = 2000;
constexpr std::size_t kLargeMax = 1900 * 1024;

struct Slot {
  unsigned char* p;
  std::size_t n;
  unsigned char tag;
};
Slot slots[kSlots];

std::size_t small_size(bench::Rng& rng) {
  std::size_t b = rng.range(0, 29);
  return rng.range(b ? kBins[b - 1] + 1 : 1, kBins[b]);
}

// Log-uniform in [lo, hi]: as many blocks between 4 and 8 KiB as between
// 512 KiB and 1 MiB.
std::size_t log_size(bench::Rng& rng, std::size_t lo, std::size_t hi) {
  double u = static_cast<double>(rng.next() >> 11) / 9007199254740992.0;
  return static_cast<std::size_t>(std::exp(std::log(double(lo)) + u * std::log(double(hi) / double(lo))));
}
}  // namespace

int main(int argc, char** argv) {
  const std::size_t iters = bench::arg(argc, argv, 1, 2'000'000);
  bench::Rng rng(2);
  std::uint64_t sum = 0;

  for (std::size_t i = 0; i < kSlots; ++i) {
    std::size_t n = small_size(rng);
    slots[i] = {static_cast<unsigned char*>(bench::xmalloc(n)), n, static_cast<unsigned char>(i)};
    bench::touch(slots[i].p, n, slots[i].tag);
  }
  for (std::size_t i = 0; i < iters; ++i) {
    Slot& s = slots[rng.range(0, kSlots - 1)];
    std::size_t dice = rng.range(0, 999);
    sum += bench::check(s.p, s.n, s.tag);
    if (dice >= 899 && dice < 969 && s.n * 3 / 2 + 16 <= kLargeMax) {
      // Growth: the old contents must survive the move.
      std::size_t n = s.n * 3 / 2 + 16;
      auto* p = static_cast<unsigned char*>(std::realloc(s.p, n));
      if (!p) std::abort();
      sum += bench::check(p, s.n, s.tag);
      bench::touch(p, n, s.tag);
      s.p = p;
      s.n = n;
      continue;
    }
    std::free(s.p);
    if (dice == 999) s.n = rng.range(2100 * 1024, 4096 * 1024);
    else if (dice >= 969) s.n = log_size(rng, 4096, kLargeMax);
    else s.n = small_size(rng);  // also a grown block past 1.9 MiB: start over
    s.p = static_cast<unsigned char*>(bench::xmalloc(s.n));
    s.tag = static_cast<unsigned char>(i);
    bench::touch(s.p, s.n, s.tag);
  }
  for (auto& s : slots) {
    sum += bench::check(s.p, s.n, s.tag);
    std::free(s.p);
  }
  std::printf("sizemix %zu %llu\n", iters, static_cast<unsigned long long>(sum));
  return 0;
}
