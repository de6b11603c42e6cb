/*
 * fuzz.h: what every libFuzzer target in tests/fuzz/ shares: the entry
 * point libFuzzer (or tests/fuzz/replay.c) calls, and FUZZ_CHECK, an
 * invariant check that aborts (a crash both to libFuzzer and to make
 * check) with the failed condition.
 */
#ifndef PM_FUZZ_H
#define PM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

#endif
