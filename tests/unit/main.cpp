#define BOOST_TEST_MODULE zmm unit tests
#include <boost/test/unit_test.hpp>
