// Options: every parser, malformed values, the environment scan.
#include <boost/test/unit_test.hpp>

#include "options.hpp"

using namespace zmm;

BOOST_AUTO_TEST_SUITE(options_parsing)

BOOST_AUTO_TEST_CASE(flags) {
    bool b = false;
    BOOST_TEST(parse_option("1", b));
    BOOST_TEST(b);
    BOOST_TEST(parse_option("0", b));
    BOOST_TEST(!b);
    for (const char* bad : {"", "2", "yes", "01", "1 "}) BOOST_TEST(!parse_option(bad, b));
}

BOOST_AUTO_TEST_CASE(counts) {
    unsigned n = 0;
    BOOST_TEST(parse_option("42", n));
    BOOST_TEST(n == 42u);
    for (const char* bad : {"", "-1", "4x", "99999999999"}) BOOST_TEST(!parse_option(bad, n));
}

BOOST_AUTO_TEST_CASE(bytes) {
    size_t n = 0;
    BOOST_TEST(parse_option("123", n));
    BOOST_TEST(n == 123u);
    BOOST_TEST(parse_option("64K", n));
    BOOST_TEST(n == 65536u);
    BOOST_TEST(parse_option("128M", n));
    BOOST_TEST(n == size_t{128} << 20);
    BOOST_TEST(parse_option("2G", n));
    BOOST_TEST(n == size_t{2} << 30);
    BOOST_TEST(parse_option("2gb", n));
    BOOST_TEST(n == size_t{2} << 30);
    BOOST_TEST(parse_option("-1", n));
    BOOST_TEST(n == SIZE_MAX);
    for (const char* bad : {"", "M", "12Q", "1.5M", "-2", "99999999999999999999", "17179869184G", "12MM"})
        BOOST_TEST(!parse_option(bad, n), bad);
}

BOOST_AUTO_TEST_CASE(defaults_are_constant) {
    constexpr Options o;  // the defaults exist before any constructor runs
    static_assert(o.alloc);
    static_assert(!o.stats);
    static_assert(o.cache_chunks == 16);
    BOOST_TEST(o.purge_budget == size_t{16} << 20);
}

BOOST_AUTO_TEST_CASE(environment_scan) {
    char a[] = "PATH=/bin";
    char b[] = "ZMM_STATS=1";
    char c[] = "ZMM_CACHE_CHUNKS=banana";  // malformed: warned, default kept
    char d[] = "ZMM_PURGE_BUDGET=1M";
    char e[] = "ZMM_STATSX=0";  // another variable
    char* env[] = {a, b, c, d, e, nullptr};
    BOOST_TEST(load_options(env));
    BOOST_TEST(options().stats);
    BOOST_TEST(options().cache_chunks == 16u);
    BOOST_TEST(options().purge_budget == size_t{1} << 20);
    BOOST_TEST(!load_options(nullptr));
    char* empty[] = {nullptr};
    load_options(empty);
    BOOST_TEST(!options().stats);
}

BOOST_AUTO_TEST_SUITE_END()
