// Options: every parser, malformed values, the environment scan.
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "diag.hpp"
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
    char e[] = "ZMM_STATSX=0";  // no option (named as a likely misspelling of ZMM_STATS)
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

BOOST_AUTO_TEST_CASE(signals) {
    Signal_name sig;
    for (const char* usr1 : {"USR1", "usr1", "SIGUSR1", "SigUsr1", "10"}) {
        sig.number = 0;
        BOOST_TEST(parse_option(usr1, sig), usr1);
        BOOST_TEST(sig.number == 10);
    }
    BOOST_TEST(parse_option("sigusr2", sig));
    BOOST_TEST(sig.number == 12);
    for (unsigned n : {34u, 40u, 59u, 62u, 64u}) {
        std::string text = std::to_string(n);
        BOOST_TEST(parse_option(text.c_str(), sig), text);
        BOOST_TEST(sig.number == static_cast<int>(n));
    }
    // Faults, the kernel's own, the stopping ones, glibc's and zmm's own.
    for (const char* bad : {"11", "7", "4", "8", "5", "6", "31", "9", "19", "2", "15", "1", "17", "13", "14", "28",
                            "32", "33", "60", "61", "65", "0", "", "SIGSEGV", "USR3", "SIG"})
        BOOST_TEST(!parse_option(bad, sig), bad);
}

namespace {
// load_options(env)'s warnings, as written to the report file.
std::string warnings_of(char** env) {
    const std::string path = "/tmp/zmm-options-test-" + std::to_string(getpid()) + ".log";
    unlink(path.c_str());
    set_report_path(path.c_str());
    load_options(env);
    set_report_path(nullptr);
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    unlink(path.c_str());
    return text.str();
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_variable_set_twice_keeps_the_first_value_as_getenv_does) {
    char a[] = "ZMM_CACHE_CHUNKS=3";
    char b[] = "ZMM_CACHE_CHUNKS=5";
    char* env[] = {a, b, nullptr};
    std::string said = warnings_of(env);
    BOOST_TEST(options().cache_chunks == 3u);
    BOOST_TEST(said == "zmm: warning: ignoring ZMM_CACHE_CHUNKS=5: ZMM_CACHE_CHUNKS is set twice (the first one "
                       "counts, as for getenv)\n");
    char c[] = "ZMM_MEMORY_LIMIT=banana";  // malformed first, then well formed: neither is used
    char d[] = "ZMM_MEMORY_LIMIT=16M";
    char* env2[] = {c, d, nullptr};
    said = warnings_of(env2);
    BOOST_TEST(options().memory_limit == SIZE_MAX);
    BOOST_TEST(said.find("malformed ZMM_MEMORY_LIMIT=banana") != std::string::npos);
    BOOST_TEST(said.find("ignoring ZMM_MEMORY_LIMIT=16M") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(values_zmm_cannot_honour_are_said) {
    char a[] = "ZMM_BACKTRACE=100";
    char b[] = "ZMM_MEMORY_LIMIT=64K";
    char c[] = "ZMM_REQUEST_SIGNAL=11";
    char* env[] = {a, b, c, nullptr};
    std::string said = warnings_of(env);
    BOOST_TEST(options().backtrace == 64u);
    BOOST_TEST(options().memory_limit == 65536u);  // (kept: a program may mean it)
    BOOST_TEST(options().request_signal.number == 12);
    BOOST_TEST(said.find("ZMM_BACKTRACE=100: zmm keeps at most 64 frames (using 64)") != std::string::npos);
    BOOST_TEST(said.find("ZMM_MEMORY_LIMIT=64K is less than one 2 MiB chunk") != std::string::npos);
    BOOST_TEST(said.find("malformed ZMM_REQUEST_SIGNAL=11 (using the default; it takes USR1, USR2, or a real-time "
                         "signal 34-59 or 62-64)") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_misspelt_option_is_named_and_other_zmm_variables_are_not) {
    char a[] = "ZMM_MEMORY_LIMT=1K";
    char b[] = "ZMM_LEAK=0";
    char c[] = "ZMM_BACKTRAEC=4";
    char d[] = "ZMM_FUZZ_BUILD=/tmp/x";  // the project's scripts' own
    char e[] = "ZMM_ROOT=/src";
    char f[] = "ZMM_LIB=/build/libzmm.so";  // (two edits from ZMM_LOG)
    char g[] = "ZMM_MEMORY_LIMITS=1K";      // (two edits from nothing, one from ZMM_MEMORY_LIMIT: named)
    char* env[] = {a, b, c, d, e, f, g, nullptr};
    std::string said = warnings_of(env);
    BOOST_TEST(said ==
               "zmm: warning: ignoring ZMM_MEMORY_LIMT, which is no zmm option (ZMM_MEMORY_LIMIT?)\n"
               "zmm: warning: ignoring ZMM_LEAK, which is no zmm option (ZMM_LEAKS?)\n"
               "zmm: warning: ignoring ZMM_BACKTRAEC, which is no zmm option (ZMM_BACKTRACE?)\n"
               "zmm: warning: ignoring ZMM_MEMORY_LIMITS, which is no zmm option (ZMM_MEMORY_LIMIT?)\n");
    BOOST_TEST(options().memory_limit == SIZE_MAX);
    BOOST_TEST(options().backtrace == 16u);
    char* empty[] = {nullptr};
    load_options(empty);
}

BOOST_AUTO_TEST_SUITE_END()
