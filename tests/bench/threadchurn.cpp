// threadchurn THREADS [CONCURRENT]: many short-lived threads. Threads start in
// waves of CONCURRENT (default 4); each allocates 2000 blocks of 16-2048 B,
// frees half of them and leaves the other half behind in a graveyard slot,
// where the thread of the next wave that gets the slot frees them: blocks
// outlive the thread (and heap owner) that allocated them, and every new
// thread needs a heap.
#include <algorithm>
#include <memory>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace {
constexpr std::size_t kBlocks = 2000;

struct Left {
  unsigned char* p[kBlocks / 2];
  std::size_t n[kBlocks / 2];
  std::size_t count = 0;
};

std::uint64_t bury(Left& grave, std::size_t k) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < grave.count; ++i) {  // the previous occupant's blocks
    sum += bench::check(grave.p[i], grave.n[i], static_cast<unsigned char>(i));
    std::free(grave.p[i]);
  }
  grave.count = 0;
  bench::Rng rng(k + 5);
  unsigned char* mine[kBlocks];
  std::size_t size[kBlocks];
  for (std::size_t i = 0; i < kBlocks; ++i) {
    size[i] = rng.range(16, 2048);
    mine[i] = static_cast<unsigned char*>(bench::xmalloc(size[i]));
    bench::touch(mine[i], size[i], static_cast<unsigned char>(i / 2));
  }
  for (std::size_t i = 0; i < kBlocks; ++i) {
    if (i % 2 == 0) {
      sum += bench::check(mine[i], size[i], static_cast<unsigned char>(i / 2));
      std::free(mine[i]);
    } else {
      grave.p[grave.count] = mine[i];
      grave.n[grave.count++] = size[i];
    }
  }
  return sum;
}
}  // namespace

int main(int argc, char** argv) {
  const std::size_t threads = bench::arg(argc, argv, 1, 20000);
  const std::size_t concurrent = std::max<std::size_t>(1, bench::arg(argc, argv, 2, 4));
  auto graves = std::make_unique<Left[]>(concurrent);
  auto sums = std::make_unique<std::uint64_t[]>(concurrent);
  std::uint64_t sum = 0;
  for (std::size_t wave = 0; wave * concurrent < threads; ++wave) {
    std::vector<std::thread> ts;
    for (std::size_t j = 0; j < concurrent && wave * concurrent + j < threads; ++j)
      ts.emplace_back([&, j, wave] { sums[j] = bury(graves[j], wave * concurrent + j); });
    for (auto& t : ts) t.join();
    for (std::size_t j = 0; j < ts.size(); ++j) sum += sums[j];
  }
  for (std::size_t j = 0; j < concurrent; ++j) {  // the last wave's leftovers
    for (std::size_t i = 0; i < graves[j].count; ++i) {
      sum += bench::check(graves[j].p[i], graves[j].n[i], static_cast<unsigned char>(i));
      std::free(graves[j].p[i]);
    }
  }
  std::printf("threadchurn %zu %zu %llu\n", threads, concurrent, static_cast<unsigned long long>(sum));
  return 0;
}
