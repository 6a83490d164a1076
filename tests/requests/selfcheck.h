/* The test programs' own checks (tests/requests): CHECK prints
 * "FAIL file:line: condition" for a condition that does not hold and counts
 * it in g_failures; the program prints "ok" last only when none failed
 * (check.py's expect_ok_lines). One translation unit per program. */
#ifndef ZMM_TESTS_REQUESTS_SELFCHECK_H
#define ZMM_TESTS_REQUESTS_SELFCHECK_H

#include <stdio.h>

static int g_failures;

#define CHECK(cond)                                                \
    do {                                                           \
        if (!(cond)) {                                             \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                          \
        }                                                          \
    } while (0)

#endif
