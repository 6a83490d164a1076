// The gate: crossings from many threads at once, a close that waits for
// those under way and stops new ones until open, and a child's reset.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "gate.hpp"

using namespace zmm;

BOOST_AUTO_TEST_SUITE(gate)

BOOST_AUTO_TEST_CASE(close_waits_for_crossings_and_stops_new_ones) {
    static constinit Gate g;
    constexpr int k_threads = 6;
    std::atomic<int> inside{0}, stop{0}, violations{0};
    std::atomic<bool> closed_now{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < k_threads; ++t)
        ts.emplace_back([&] {
            while (!stop.load()) {
                unsigned k = g.enter();
                ++inside;
                if (closed_now.load()) ++violations;  // inside while closed
                --inside;
                g.leave(k);
            }
        });
    for (int i = 0; i < 500; ++i) {
        g.close();
        closed_now = true;
        if (inside.load() != 0) ++violations;
        std::this_thread::yield();
        if (inside.load() != 0) ++violations;
        closed_now = false;
        g.open();
    }
    stop = 1;
    for (auto& th : ts) th.join();
    BOOST_TEST(violations.load() == 0);
}

BOOST_AUTO_TEST_CASE(reset_forgets_crossings) {
    static constinit Gate g;
    (void)g.enter();  // a crossing that never leaves (another thread's, in a forked child)
    g.reset();
    g.close();  // returns: nothing under way
    g.open();
    unsigned k = g.enter();
    g.leave(k);
    BOOST_TEST(true);
}

BOOST_AUTO_TEST_SUITE_END()
