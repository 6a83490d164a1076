// larson OPS [THREADS]: a server under load, after Larson & Krishnan's
// benchmark. THREADS threads (default 2) each own a region of 5000 slots and
// replace random slots with blocks of 8-1000 B; every 10000 replacements
// (a round) the regions rotate, so each thread frees what another thread
// allocated, as a server's worker frees the objects of a connection another
// worker served. OPS replacements in all.
#include <algorithm>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace {
constexpr std::size_t kSlotsPerThread = 5000;
constexpr std::size_t kOpsPerRound = 10000;

struct Slot {
  unsigned char* p;
  std::size_t n;
  unsigned char tag;
};
}  // namespace

int main(int argc, char** argv) {
  const std::size_t ops = bench::arg(argc, argv, 1, 50'000'000);
  const std::size_t threads = std::max<std::size_t>(1, bench::arg(argc, argv, 2, 2));
  const std::size_t rounds = std::max<std::size_t>(1, ops / (threads * kOpsPerRound));
  auto table = std::make_unique<Slot[]>(threads * kSlotsPerThread);
  auto sums = std::make_unique<std::uint64_t[]>(threads);
  std::barrier<> sync(static_cast<std::ptrdiff_t>(threads));

  auto worker = [&](std::size_t t) {
    bench::Rng rng(t + 4);
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < kSlotsPerThread; ++i) {
      Slot& s = table[t * kSlotsPerThread + i];
      s.n = rng.range(8, 1000);
      s.p = static_cast<unsigned char*>(bench::xmalloc(s.n));
      s.tag = static_cast<unsigned char>(i);
      bench::touch(s.p, s.n, s.tag);
    }
    for (std::size_t r = 0; r < rounds; ++r) {
      sync.arrive_and_wait();  // the previous owner of our next region is done with it
      Slot* region = &table[(t + r) % threads * kSlotsPerThread];
      for (std::size_t i = 0; i < kOpsPerRound; ++i) {
        Slot& s = region[rng.range(0, kSlotsPerThread - 1)];
        sum += bench::check(s.p, s.n, s.tag);
        std::free(s.p);
        s.n = rng.range(8, 1000);
        s.p = static_cast<unsigned char*>(bench::xmalloc(s.n));
        s.tag = static_cast<unsigned char>(i);
        bench::touch(s.p, s.n, s.tag);
      }
    }
    sync.arrive_and_wait();
    for (std::size_t i = 0; i < kSlotsPerThread; ++i) {  // tear down whatever region we hold now
      Slot& s = table[(t + rounds) % threads * kSlotsPerThread + i];
      sum += bench::check(s.p, s.n, s.tag);
      std::free(s.p);
    }
    sums[t] = sum;
  };
  std::vector<std::thread> ts;
  for (std::size_t t = 0; t < threads; ++t) ts.emplace_back(worker, t);
  for (auto& th : ts) th.join();
  std::uint64_t sum = 0;
  for (std::size_t t = 0; t < threads; ++t) sum += sums[t];
  std::printf("larson %zu %zu %llu\n", rounds * threads * kOpsPerRound, threads,
              static_cast<unsigned long long>(sum));
  return 0;
}
