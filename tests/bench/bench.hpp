// Shared helpers of the benchmark programs: argument parsing, a fixed-seed
// random generator, and block filling/checking. Every program prints exactly
// one line, a checksum that depends only on its arguments (never on thread
// scheduling or on the allocator), so scripts/bench can tell a fast wrong
// answer from a fast right one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace bench {

// argv[i] as a non-negative count, or the default when absent.
inline std::size_t arg(int argc, char** argv, int i, std::size_t def) {
  if (argc <= i) return def;
  char* end = nullptr;
  unsigned long long v = std::strtoull(argv[i], &end, 10);
  if (end == argv[i] || *end != '\0') {
    std::fprintf(stderr, "%s: argument %d must be a count, not '%s'\n", argv[0], i, argv[i]);
    std::exit(2);
  }
  return static_cast<std::size_t>(v);
}

// xorshift64*: a few instructions per number, so the allocator, not the
// generator, dominates the loop (it is part of every allocator's time alike).
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  // Uniform in [lo, hi] (hi - lo small against 2^32: the bias is irrelevant).
  std::size_t range(std::size_t lo, std::size_t hi) {
    return lo + static_cast<std::size_t>((next() >> 32) % (hi - lo + 1));
  }
};

// Writes the first byte of every page and the last byte of the block, as a
// program that uses its memory would: the pages become resident (peak RSS is
// honest) without memset dominating the time of large blocks.
inline void touch(void* p, std::size_t n, unsigned char tag) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; i += 4096) b[i] = tag;
  b[n - 1] = tag;
}

// Reads back what touch() wrote: a wrong byte means a block was handed out
// twice or overwritten, so the program stops loudly instead of timing garbage.
inline std::uint64_t check(const void* p, std::size_t n, unsigned char tag) {
  const auto* b = static_cast<const unsigned char*>(p);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n; i += 4096) sum += b[i];
  sum += b[n - 1];
  if (b[0] != tag || b[n - 1] != tag) {
    std::fprintf(stderr, "bench: block %p (%zu bytes) corrupted\n", p, n);
    std::abort();
  }
  return sum;
}

inline void* xmalloc(std::size_t n) {
  void* p = std::malloc(n);
  if (!p) {
    std::fprintf(stderr, "bench: malloc(%zu) failed\n", n);
    std::abort();
  }
  return p;
}

}  // namespace bench
