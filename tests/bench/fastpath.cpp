// fastpath ITERATIONS: the single-thread fast path. A working set of 1000
// blocks of 16-512 B; each iteration frees a random slot and fills it with a
// new block of a random size: one malloc/free pair per iteration, nothing else
// but one random number and a byte written and read back.
//
// `fastpath 0` does the start-up and the working set only: scripts/bench
// callgrind subtracts it to get instructions per pair.
#include "bench.hpp"

namespace {
constexpr std::size_t kSlots = 1000;
struct Slot {
  unsigned char* p;
  unsigned char tag;
};
Slot slots[kSlots];
}  // namespace

int main(int argc, char** argv) {
  const std::size_t iters = bench::arg(argc, argv, 1, 50'000'000);
  bench::Rng rng(1);
  std::uint64_t sum = 0;

  for (std::size_t i = 0; i < kSlots; ++i) {
    auto n = rng.range(16, 512);
    slots[i] = {static_cast<unsigned char*>(bench::xmalloc(n)), static_cast<unsigned char>(i)};
    slots[i].p[0] = slots[i].tag;
  }
  for (std::size_t i = 0; i < iters; ++i) {
    std::uint64_t r = rng.next();
    Slot& s = slots[(r >> 32) % kSlots];  // high bits: the slot
    std::size_t n = 16 + (r & 511) % 497;  // low bits: the size, 16..512
    sum += s.p[0] ^ s.tag;                 // 0 unless the block was overwritten
    std::free(s.p);
    s.p = static_cast<unsigned char*>(std::malloc(n));
    s.tag = static_cast<unsigned char>(i);
    s.p[0] = s.tag;
  }
  for (auto& s : slots) {
    sum += s.p[0] ^ s.tag;
    std::free(s.p);
  }
  std::printf("fastpath %zu %llu\n", iters, static_cast<unsigned long long>(sum));
  return sum == 0 ? 0 : 1;
}
