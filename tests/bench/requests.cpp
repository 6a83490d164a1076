// requests REQUESTS [plain|clean]: the request-shaped workload (issue 4, item 6;
// issue 3's Performance section). Each request, as a PHP or server request
// would: zmm_request_begin, build a graph of a few thousand mixed C++ objects
// (nodes with std::string names, std::vector edge lists and tag lists, small
// payload structs, a std::map index by name and a std::unordered_map by id),
// walk it, build a result string, tear it all down in a shuffled order, leak
// 3 small blocks, zmm_request_end. About 5,000 allocations per request.
//
// "plain" runs the same work without calling zmm_request_begin/end, the
// baseline that requests are measured against. "clean" runs requests that
// leak nothing: what the request heaps cost a program without leaks, where
// an end has no leak to look for. The calls go through zmm.h's
// weak-symbol shim, so the same binary runs without zmm (glibc, the peers,
// valgrind, heaptrack), where they do nothing.
//
// The leaked blocks are lost (nothing points to them) and never freed: every
// leak tool sees exactly 3 definitely lost blocks per request. They are
// never read after their request either, so ZMM_RECLAIM=1 (ZendMM's
// behaviour: leaks die with the request) runs the same program correctly.
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmm/zmm.h>

#include "bench.hpp"

namespace {
constexpr std::size_t kNodes = 600;  // per request
constexpr long kLeaks = 3;           // per request

struct Item {  // a small struct (32 B), in a per-node singly linked list
  std::uint32_t id;
  std::uint32_t kind;
  std::uint64_t weight;
  Item* next;
};

struct Node {
  std::uint32_t id;
  std::string name;  // 6-60 chars: some in the SSO buffer, most on the heap
  std::vector<std::uint32_t> edges;  // grown by push_back: 4, 8, 16... bytes
  std::vector<std::string> tags;
  Item* items = nullptr;
};

// A leaked block records the one before it, disguised (a non-canonical
// address points nowhere), as the program keeps its own last one: nothing
// reaches them, and every leak tool finds them definitely lost.
struct Leaked {
  std::uintptr_t previous;
  std::size_t n;
};
constexpr std::uintptr_t kDisguise = std::uintptr_t{1} << 62;
volatile std::uintptr_t g_last_leak = 0;

// noinline: the leaks keep a frame of their own in every tool's backtraces.
__attribute__((noinline)) void leak(std::size_t n) {
  auto* l = static_cast<Leaked*>(bench::xmalloc(n));
  std::memset(static_cast<void*>(l), 0, n);
  l->previous = g_last_leak;
  l->n = n;
  g_last_leak = reinterpret_cast<std::uintptr_t>(l) ^ kDisguise;
}

std::string make_name(bench::Rng& rng, std::uint32_t id) {
  std::string s = "node-" + std::to_string(id) + "-";
  std::size_t len = rng.range(0, 48);
  for (std::size_t i = 0; i < len; ++i) s += static_cast<char>('a' + rng.range(0, 25));
  return s;
}

// One request's work; returns a checksum that depends only on the seed.
__attribute__((noinline)) std::uint64_t serve(std::uint64_t seed, bool leaky) {
  bench::Rng rng(seed);
  std::uint64_t sum = 0;

  std::vector<std::unique_ptr<Node>> nodes;  // grows by doubling: 8 B ... 8 KiB
  std::map<std::string, Node*> by_name;
  std::unordered_map<std::uint32_t, Node*> by_id;
  for (std::uint32_t i = 0; i < kNodes; ++i) {
    auto n = std::make_unique<Node>();
    n->id = i * 7919 + static_cast<std::uint32_t>(seed);
    n->name = make_name(rng, i);
    for (std::size_t e = rng.range(0, 12); e > 0; --e)
      n->edges.push_back(static_cast<std::uint32_t>(rng.range(0, kNodes - 1)));
    for (std::size_t t = rng.range(0, 3); t > 0; --t)
      n->tags.push_back("tag:" + std::to_string(rng.range(0, 1u << 30)) + (t == 1 ? std::string(rng.range(0, 40), 'x') : ""));
    for (std::size_t k = rng.range(0, 3); k > 0; --k)
      n->items = new Item{i, static_cast<std::uint32_t>(k), rng.next() >> 40, n->items};
    by_name.emplace(n->name, n.get());
    by_id.emplace(n->id, n.get());
    nodes.push_back(std::move(n));
  }

  // Walk: breadth-first from node 0 through the edges, lookups through both
  // indexes, and a result string built by appending (realloc-style growth).
  std::vector<bool> seen(kNodes);
  std::vector<std::uint32_t> queue{0};
  std::string out;
  seen[0] = true;
  for (std::size_t q = 0; q < queue.size(); ++q) {
    const Node* n = nodes[queue[q]].get();
    sum += by_name.at(n->name)->id + by_id.at(n->id)->name.size();
    for (const Item* it = n->items; it; it = it->next) sum += it->weight * it->kind;
    for (const auto& t : n->tags) sum += t.size();
    out += n->name;
    out += ';';
    for (std::uint32_t e : n->edges)
      if (!seen[e]) {
        seen[e] = true;
        queue.push_back(e);
      }
  }
  sum = sum * 31 + out.size() + queue.size();

  // Tear down in a shuffled order, indexes first, so frees interleave across
  // sizes and pages instead of mirroring the allocation order.
  for (std::size_t i = kNodes - 1; i > 0; --i) std::swap(nodes[i], nodes[rng.range(0, i)]);
  for (const auto& n : nodes) {
    by_name.erase(n->name);
    by_id.erase(n->id);
  }
  for (auto& n : nodes) {
    while (Item* it = n->items) {
      n->items = it->next;
      delete it;
    }
    n.reset();
  }

  if (leaky) {
    leak(24);
    leak(40);
    leak(72);
  }
  return sum;
}
}  // namespace

int main(int argc, char** argv) {
  const std::size_t requests = bench::arg(argc, argv, 1, 20'000);
  const bool plain = argc > 2 && std::string_view(argv[2]) == "plain";
  const bool clean = argc > 2 && std::string_view(argv[2]) == "clean";
  if (argc > 2 && !plain && !clean) {
    std::fprintf(stderr, "usage: %s REQUESTS [plain|clean]\n", argv[0]);
    return 2;
  }
  const long planted = clean ? 0 : kLeaks;
  std::uint64_t sum = 0;
  long reported = 0, ended = 0;
  for (std::size_t r = 0; r < requests; ++r) {
    if (!plain) zmm_request_begin("bench request");
    sum = sum * 1099511628211ull + serve(r + 1, !clean);
    if (!plain) {
      long leaks = zmm_request_end();  // -1 without zmm
      if (leaks >= 0) reported += leaks, ++ended;
    }
  }
  // zmm's count goes to stderr (stdout must be the same under every
  // allocator): a mismatch is a zmm bug, not a benchmark figure.
  if (ended > 0 && reported != ended * planted)
    std::fprintf(stderr, "requests: zmm reported %ld leaked blocks in %ld requests, %ld planted\n", reported,
                 ended, ended * planted);
  // (The same line in every mode: the benchmark script compares it.)
  std::printf("requests %zu %llu\n", requests, static_cast<unsigned long long>(sum));
  return 0;
}
