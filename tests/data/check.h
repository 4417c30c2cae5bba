/* CHECK(cond, fmt, ...): counts a failed check in `failures` and says where, on stderr.
 * Shared by the C programs of the end-to-end tests. */
#ifndef VLLM_PROFILER_TEST_CHECK_H
#define VLLM_PROFILER_TEST_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK(cond, ...)                                            \
    do {                                                            \
        if (!(cond)) {                                              \
            fprintf(stderr, "check failed at line %d: ", __LINE__); \
            fprintf(stderr, __VA_ARGS__);                           \
            fprintf(stderr, "\n");                                  \
            failures++;                                             \
        }                                                           \
    } while (0)

#endif
