// prodcons BLOCKS [PAIRS]: cross-thread frees. PAIRS producer/consumer pairs
// (default 1, i.e. two threads); each producer allocates its share of BLOCKS
// blocks of 16-1024 B, writes them, and hands them over in batches of 256
// through a lock-free single-producer/single-consumer ring; the consumer reads
// each block and frees it. Every free is of a block another thread allocated.
#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace {
constexpr std::size_t kBatch = 256;
constexpr std::size_t kRing = 32;  // batches in flight per pair, at most 8192 blocks

struct Batch {
  void* p[kBatch];
  std::size_t n;
};

struct Pair {
  Batch ring[kRing];
  alignas(64) std::atomic<std::size_t> head{0};  // batches published by the producer
  alignas(64) std::atomic<std::size_t> tail{0};  // batches taken by the consumer
  std::uint64_t sum = 0;
};

// The block carries its own size and a tag at both ends, so the consumer can
// check it without any side channel.
struct Header {
  std::uint32_t size;
  std::uint32_t tag;
};

void produce(Pair& pr, std::size_t blocks, std::uint64_t seed) {
  bench::Rng rng(seed);
  std::size_t done = 0;
  while (done < blocks) {
    std::size_t h = pr.head.load(std::memory_order_relaxed);
    while (h - pr.tail.load(std::memory_order_acquire) == kRing) std::this_thread::yield();
    Batch& b = pr.ring[h % kRing];
    b.n = std::min(kBatch, blocks - done);
    for (std::size_t i = 0; i < b.n; ++i, ++done) {
      auto n = static_cast<std::uint32_t>(rng.range(16, 1024));
      auto* p = static_cast<unsigned char*>(bench::xmalloc(n));
      *reinterpret_cast<Header*>(p) = {n, static_cast<std::uint32_t>(done)};
      p[n - 1] = static_cast<unsigned char>(done);
      b.p[i] = p;
    }
    pr.head.store(h + 1, std::memory_order_release);
  }
}

void consume(Pair& pr, std::size_t blocks) {
  std::size_t done = 0;
  while (done < blocks) {
    std::size_t t = pr.tail.load(std::memory_order_relaxed);
    while (pr.head.load(std::memory_order_acquire) == t) std::this_thread::yield();
    Batch& b = pr.ring[t % kRing];
    for (std::size_t i = 0; i < b.n; ++i, ++done) {
      auto* p = static_cast<unsigned char*>(b.p[i]);
      Header hd = *reinterpret_cast<Header*>(p);
      if (p[hd.size - 1] != static_cast<unsigned char>(hd.tag)) {
        std::fprintf(stderr, "prodcons: block %p corrupted\n", static_cast<void*>(p));
        std::abort();
      }
      pr.sum += hd.size;
      std::free(p);
    }
    pr.tail.store(t + 1, std::memory_order_release);
  }
}
}  // namespace

int main(int argc, char** argv) {
  const std::size_t blocks = bench::arg(argc, argv, 1, 20'000'000);
  const std::size_t pairs = std::max<std::size_t>(1, bench::arg(argc, argv, 2, 1));
  auto prs = std::make_unique<Pair[]>(pairs);
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < pairs; ++i) {
    std::size_t share = blocks / pairs + (i < blocks % pairs);
    ts.emplace_back(produce, std::ref(prs[i]), share, i + 3);
    ts.emplace_back(consume, std::ref(prs[i]), share);
  }
  for (auto& t : ts) t.join();
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < pairs; ++i) sum += prs[i].sum;
  std::printf("prodcons %zu %zu %llu\n", blocks, pairs, static_cast<unsigned long long>(sum));
  return 0;
}
