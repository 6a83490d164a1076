// The stack depot: one id per distinct stack, found again without the lock,
// across segments, from several threads at once.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "stack_depot.hpp"

using namespace zmm;

namespace {
// A stack unique to (seed, n): made-up program counters.
std::vector<uintptr_t> stack_of(uint32_t seed, unsigned n) {
    std::vector<uintptr_t> pcs(n);
    for (unsigned i = 0; i < n; ++i) pcs[i] = 0x400000u + uintptr_t{seed} * 4096 + i * 16;
    return pcs;
}

bool holds(uint32_t id, const std::vector<uintptr_t>& pcs) {
    stack_depot::Frame out[stack_depot::k_max_frames];
    unsigned n = stack_depot::get(id, out, stack_depot::k_max_frames);
    if (n != pcs.size()) return false;
    for (unsigned i = 0; i < n; ++i)
        if (out[i].pc != pcs[i]) return false;
    return true;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(stack_depot_tests)

BOOST_AUTO_TEST_CASE(one_id_per_stack) {
    auto a = stack_of(1, 16), b = stack_of(2, 16), a_short = stack_of(1, 15);
    uint32_t ia = stack_depot::put(a.data(), 16);
    BOOST_TEST(ia != 0u);
    BOOST_TEST(stack_depot::put(a.data(), 16) == ia);
    uint32_t ib = stack_depot::put(b.data(), 16);
    BOOST_TEST(ib != ia);
    uint32_t is = stack_depot::put(a_short.data(), 15);  // a prefix is another stack
    BOOST_TEST(is != ia);
    BOOST_TEST(holds(ia, a));
    BOOST_TEST(holds(ib, b));
    BOOST_TEST(holds(is, a_short));
    BOOST_TEST(stack_depot::put(a.data(), 0) == 0u);
}

// After an unload (forget_modules) the depot asks the loader for its modules
// again; a stack that does not pass through an unloaded object's addresses
// (none here: nothing was unloaded) is the same record as before, found on
// both lock-free paths (the thread's last stack, its bucket), with the same
// module. (A stack through an unloaded object's addresses is stored anew:
// tests/requests/reload.c.)
BOOST_AUTO_TEST_CASE(forget_modules_keeps_stacks_of_mapped_code) {
    // Addresses of this program's code: their frames name a module.
    auto pcs = stack_of(0, 3);
    pcs[0] = reinterpret_cast<uintptr_t>(&stack_of);
    pcs[1] = reinterpret_cast<uintptr_t>(&holds);
    uint32_t before = stack_depot::put(pcs.data(), 3);
    BOOST_TEST(before != 0u);
    stack_depot::Frame frames[stack_depot::k_max_frames];
    BOOST_TEST(stack_depot::get(before, frames, stack_depot::k_max_frames) == 3u);
    const uint32_t module = frames[0].module;
    BOOST_TEST(module != stack_depot::k_no_module);
    const size_t stored = stack_depot::count();

    stack_depot::forget_modules();
    BOOST_TEST(stack_depot::put(pcs.data(), 3) == before);  // the thread's last stack
    auto other = stack_of(77, 4);
    BOOST_TEST(stack_depot::put(other.data(), 4) != 0u);
    BOOST_TEST(stack_depot::put(pcs.data(), 3) == before);  // its bucket
    BOOST_TEST(stack_depot::count() <= stored + 1);  // `other` at most
    BOOST_TEST(stack_depot::get(before, frames, stack_depot::k_max_frames) == 3u);
    BOOST_TEST(frames[0].module == module);
    // A new stack of the same code finds the same module again (looked up anew).
    auto more = pcs;
    more.push_back(0x400000u);
    uint32_t fresh = stack_depot::put(more.data(), 4);
    BOOST_TEST(stack_depot::get(fresh, frames, stack_depot::k_max_frames) == 4u);
    BOOST_TEST(frames[0].module == module);
}

// 64-frame records are about 1 KiB: 9000 of them fill more than two 4 MiB
// segments; every one keeps its id and its frames.
BOOST_AUTO_TEST_CASE(records_span_segments) {
    constexpr uint32_t k_stacks = 9000;
    std::vector<uint32_t> ids(k_stacks);
    size_t before = stack_depot::count();
    for (uint32_t s = 0; s < k_stacks; ++s) {
        auto pcs = stack_of(100000 + s, stack_depot::k_max_frames);
        ids[s] = stack_depot::put(pcs.data(), stack_depot::k_max_frames);
        BOOST_TEST_REQUIRE(ids[s] != 0u);
    }
    BOOST_TEST(stack_depot::count() == before + k_stacks);
    BOOST_TEST((ids.back() >> 19) >= 2u);  // (an id's segment is its high bits)
    for (uint32_t s = 0; s < k_stacks; s += 97) {
        auto pcs = stack_of(100000 + s, stack_depot::k_max_frames);
        BOOST_TEST(holds(ids[s], pcs));
        BOOST_TEST(stack_depot::put(pcs.data(), stack_depot::k_max_frames) == ids[s]);
    }
}

// Threads putting the same stacks at once, from a common start, agree on
// every id; each stack is stored once.
BOOST_AUTO_TEST_CASE(threads_agree_on_ids) {
    constexpr int k_threads = 4;
    constexpr uint32_t k_stacks = 2000;
    std::vector<std::vector<uint32_t>> ids(k_threads, std::vector<uint32_t>(k_stacks));
    std::atomic<int> wrong{0}, ready{0};
    size_t before = stack_depot::count();
    std::vector<std::thread> ts;
    for (int t = 0; t < k_threads; ++t)
        ts.emplace_back([&, t] {
            ++ready;
            while (ready.load() < k_threads) {
            }
            for (int round = 0; round < 3; ++round)
                for (uint32_t k = 0; k < k_stacks; ++k) {
                    uint32_t s = (k * 7 + t * 13) % k_stacks;  // each thread in its own order
                    auto pcs = stack_of(200000 + s, 8 + s % 24);
                    uint32_t id = stack_depot::put(pcs.data(), static_cast<unsigned>(pcs.size()));
                    if (!holds(id, pcs)) ++wrong;
                    if (round == 0) ids[t][s] = id;
                    else if (ids[t][s] != id) ++wrong;
                }
        });
    for (auto& th : ts) th.join();
    BOOST_TEST(wrong.load() == 0);
    for (int t = 1; t < k_threads; ++t) BOOST_TEST(ids[t] == ids[0]);
    BOOST_TEST(stack_depot::count() == before + k_stacks);
}

BOOST_AUTO_TEST_CASE(ids_it_never_gave_are_empty) {
    stack_depot::Frame out[4];
    BOOST_TEST(stack_depot::get(0, out, 4) == 0u);
    BOOST_TEST(stack_depot::get(63u << 19, out, 4) == 0u);  // a segment never mapped
    BOOST_TEST(stack_depot::get(~0u, out, 4) == 0u);        // past the last segment
}

BOOST_AUTO_TEST_SUITE_END()
