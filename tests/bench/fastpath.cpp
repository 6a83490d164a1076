// fastpath ITERATIONS [malloc|new]: the single-thread fast path. A working
// set of 1000 blocks of 16-512 B; each iteration frees a random slot and
// fills it with a new block of a random size: one malloc/free pair per
// iteration (`new`: one operator new / sized operator delete pair, what g++
// emits for `new char[n]`-like objects and `delete p` of a complete type),
// nothing else but one random number and a byte written and read back.
//
// `fastpath 0` does the start-up and the working set only: scripts/bench
// callgrind subtracts it to get instructions per pair.
#include <cstring>
#include <new>

#include "bench.hpp"

namespace {
constexpr std::size_t kSlots = 1000;
struct Slot {
  unsigned char* p;
  std::size_t n;
  unsigned char tag;
};
Slot slots[kSlots];

// The allocation interface measured: the C one, or C++'s.
template <bool Cxx>
unsigned char* make(std::size_t n) {
  if constexpr (Cxx) return static_cast<unsigned char*>(::operator new(n));
  return static_cast<unsigned char*>(std::malloc(n));
}
template <bool Cxx>
void drop(unsigned char* p, std::size_t n) {
  if constexpr (Cxx) return ::operator delete(p, n);
  (void)n;
  std::free(p);
}

// Inline: scripts/bench callgrind counts main's own instructions as the loop's.
template <bool Cxx>
__attribute__((always_inline)) inline std::uint64_t run(std::size_t iters, bench::Rng& rng) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < iters; ++i) {
    std::uint64_t r = rng.next();
    Slot& s = slots[(r >> 32) % kSlots];  // high bits: the slot
    std::size_t n = 16 + (r & 511) % 497;  // low bits: the size, 16..512
    sum += s.p[0] ^ s.tag;                 // 0 unless the block was overwritten
    drop<Cxx>(s.p, s.n);
    s.p = make<Cxx>(n);
    s.n = n;
    s.tag = static_cast<unsigned char>(i);
    s.p[0] = s.tag;
  }
  for (auto& s : slots) {
    sum += s.p[0] ^ s.tag;
    drop<Cxx>(s.p, s.n);
  }
  return sum;
}
}  // namespace

int main(int argc, char** argv) {
  const std::size_t iters = bench::arg(argc, argv, 1, 50'000'000);
  const bool cxx = argc > 2 && std::strcmp(argv[2], "new") == 0;
  if (argc > 2 && !cxx && std::strcmp(argv[2], "malloc") != 0) {
    std::fprintf(stderr, "usage: %s ITERATIONS [malloc|new]\n", argv[0]);
    return 2;
  }
  bench::Rng rng(1);

  for (std::size_t i = 0; i < kSlots; ++i) {
    auto n = rng.range(16, 512);
    slots[i] = {cxx ? make<true>(n) : static_cast<unsigned char*>(bench::xmalloc(n)), n, static_cast<unsigned char>(i)};
    slots[i].p[0] = slots[i].tag;
  }
  std::uint64_t sum = cxx ? run<true>(iters, rng) : run<false>(iters, rng);
  std::printf("fastpath %zu %s %llu\n", iters, cxx ? "new" : "malloc", static_cast<unsigned long long>(sum));
  return sum == 0 ? 0 : 1;
}
