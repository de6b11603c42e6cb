/*
 * fuzz_raft_frame: drives pm_raft_unframe (core/pm_raft.c), the check
 * pm_raft's FSM adapter runs on every raft log entry and snapshot it is
 * handed (from the local log on disk, or from a peer) before the role
 * sees the payload, and its inverse pm_raft_frame_into.
 *
 * Input: one raft buffer, as raft hands it to the FSM (seeds: game
 * entries and a snapshot framed the way pm_raft_apply frames them, and
 * near misses: short, a nonzero reserved word, a length past the end,
 * trailing bytes).
 *
 * Asserts: a buffer is accepted exactly when it has the header, a zero
 * reserved word and a length within it; the payload then starts right
 * after the header and ends inside the buffer. Framing the payload again
 * gives a multiple of 8 bytes with zero padding that unframes to the same
 * payload, and gives the input itself back when the input was canonical
 * (exactly the framed length, zero padding).
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "pm_raft.h"

static uint32_t
u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    while (n-- > 0)
        if (*p++ != 0)
            return false;
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const void *pl = NULL, *pl2 = NULL;
    size_t len = 0, len2 = 0, flen;
    bool ok = pm_raft_unframe(data, size, &pl, &len), expect;
    uint8_t *f;

    expect = size >= 8 && u32le(data + 4) == 0 && u32le(data) <= size - 8;
    FUZZ_CHECK(ok == expect);
    if (!ok) {
        FUZZ_CHECK(pl == NULL && len == 0);
        return 0;
    }
    FUZZ_CHECK((const uint8_t *)pl == data + 8);
    FUZZ_CHECK(len == u32le(data) && len <= size - 8);

    flen = pm_raft_framed_len(len);
    FUZZ_CHECK(flen % 8 == 0 && flen >= len + 8 && flen < len + 16);
    f = malloc(flen);
    FUZZ_CHECK(f != NULL);
    pm_raft_frame_into(f, pl, len);
    FUZZ_CHECK(all_zero(f + 8 + len, flen - 8 - len));
    FUZZ_CHECK(pm_raft_unframe(f, flen, &pl2, &len2));
    FUZZ_CHECK(len2 == len && (const uint8_t *)pl2 == f + 8);
    FUZZ_CHECK(len == 0 || memcmp(pl, pl2, len) == 0);
    if (size == flen && all_zero(data + 8 + len, size - 8 - len))
        FUZZ_CHECK(memcmp(f, data, size) == 0);
    free(f);
    return 0;
}
