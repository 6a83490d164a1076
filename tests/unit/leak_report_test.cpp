// The leak report's JSON: strings that every JSON reader takes.
#include <boost/test/unit_test.hpp>

#include <string>

#include "format.hpp"
#include "leak_report.hpp"

using namespace zmm;

namespace {
std::string json_of(const char* s) {
    Text t;
    json_string(t, s);
    return t.c_str();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(leak_report_json)

BOOST_AUTO_TEST_CASE(strings_are_escaped) {
    BOOST_TEST(json_of("GET /index") == "\"GET /index\"");
    BOOST_TEST(json_of("a\"b\\c") == "\"a\\\"b\\\\c\"");
    BOOST_TEST(json_of("tab\there\n") == "\"tab\\u0009here\\u000a\"");
}

// A request name is the program's bytes: well-formed UTF-8 stays as it is,
// anything else becomes U+FFFD (a raw 0xff made the line unparsable).
BOOST_AUTO_TEST_CASE(bytes_that_are_not_utf8_become_replacement_characters) {
    BOOST_TEST(json_of("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    BOOST_TEST(json_of("\xff\xfe name") == "\"\\ufffd\\ufffd name\"");
    BOOST_TEST(json_of("\xc3") == "\"\\ufffd\"");                // cut short at the end
    BOOST_TEST(json_of("\xc3(") == "\"\\ufffd(\"");              // a lead without its continuation
    BOOST_TEST(json_of("\xc0\xaf") == "\"\\ufffd\\ufffd\"");     // overlong '/'
    BOOST_TEST(json_of("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
    BOOST_TEST(json_of("\xf4\x90\x80\x80") == "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  // past U+10FFFF
    BOOST_TEST(json_of("\x80x") == "\"\\ufffdx\"");              // a stray continuation
}

// In text, a request name's control characters show as '?': a newline in a
// name would start a line that reads as zmm's own.
BOOST_AUTO_TEST_CASE(text_names_cannot_start_lines) {
    Text t;
    printable(t, "GET /a\nzmm: request 9 'x' ended: 0 leaks\r\x7f");
    BOOST_TEST(std::string(t.c_str()) == "GET /a?zmm: request 9 'x' ended: 0 leaks??");
}

BOOST_AUTO_TEST_SUITE_END()
