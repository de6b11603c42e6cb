/*
 * fuzz_redis: drives RESP reply handling as core/pm_redis.c does it: the
 * bytes from the server fed (in pieces) to pm_redis_reader_new's reader
 * (hiredis' redisReader with pm_redis' array limit), each
 * reply read through pm_redis_reply_type/_integer/_str/_elements/
 * _element, and pm_redis_reply_push, which decides whether a reply is a
 * pub/sub push and what the message callback gets. Also
 * pm_redis_url_parse on the same bytes as a URL.
 *
 * Input: byte 0 sets the piece size; the rest is the reply stream.
 *
 * Asserts: the reader gives the same replies (same shape, same bytes)
 * fed whole or in pieces; a string reply's length matches its bytes and
 * it is NUL-ended; elements are reachable exactly up to
 * pm_redis_reply_elements; a push has a string channel and payload (the
 * callbacks compare and parse them); a parsed URL has a host and a port
 * in 1..65535.
 */
#include "config.h"

#include <string.h>

#include <hiredis/hiredis.h>

#include "fuzz.h"
#include "pm_redis.h"
#include "pm_util.h"

#define MAX_REPLIES 64

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Walk a reply through the pm_redis accessors; a hash of what it holds. */
static uint64_t
walk(const struct pm_redis_reply *rep, uint64_t h, int depth)
{
    enum pm_redis_type t = pm_redis_reply_type(rep);
    size_t len = 0, n, i;
    const char *s = pm_redis_reply_str(rep, &len);
    long long v = pm_redis_reply_integer(rep);

    FUZZ_CHECK(depth < 64);
    h = fnv(h, &t, sizeof t);
    h = fnv(h, &v, sizeof v);
    if (s != NULL) {
        FUZZ_CHECK(s[len] == '\0');
        h = fnv(h, s, len);
    } else {
        FUZZ_CHECK(len == 0);
    }
    n = pm_redis_reply_elements(rep);
    for (i = 0; i < n; i++) {
        const struct pm_redis_reply *e = pm_redis_reply_element(rep, i);

        FUZZ_CHECK(e != NULL);
        h = walk(e, h, depth + 1);
    }
    FUZZ_CHECK(pm_redis_reply_element(rep, n) == NULL);
    {
        const char *ch = NULL, *msg = NULL;
        size_t chlen = 0, mlen = 0;

        if (pm_redis_reply_push(rep, &ch, &chlen, &msg, &mlen)) {
            FUZZ_CHECK(t == PM_REDIS_ARRAY);
            /* the message callbacks compare the channel and parse msg */
            FUZZ_CHECK(ch != NULL && msg != NULL);
            FUZZ_CHECK(ch[chlen] == '\0' && msg[mlen] == '\0');
        }
    }
    return h;
}

/* Feed buf in pieces of step (0: whole); hash of every reply. */
static uint64_t
run(const char *buf, size_t len, size_t step, int *status, unsigned *count)
{
    redisReader *r = pm_redis_reader_new();
    uint64_t h = 14695981039346656037ull;
    size_t off = 0;

    *status = REDIS_OK;
    *count = 0;
    FUZZ_CHECK(r != NULL);
    while (off < len && *status == REDIS_OK && *count < MAX_REPLIES) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        void *reply;

        if (redisReaderFeed(r, buf + off, n) != REDIS_OK) {
            *status = REDIS_ERR;
            break;
        }
        off += n;
        for (;;) {
            if (redisReaderGetReply(r, &reply) != REDIS_OK) {
                *status = REDIS_ERR;
                break;
            }
            if (reply == NULL)
                break;
            h = walk(reply, h, 0);
            freeReplyObject(reply);
            if (++*count >= MAX_REPLIES)
                break;
        }
        if (step != 0)
            step = step * 7 % 17 + 1;
    }
    redisReaderFree(r);
    return h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf;
    char *copy, *url;
    int st1, st2;
    unsigned n1, n2;
    uint64_t h1, h2;

    if (size < 1)
        return 0;
    copy = pm_xmalloc(size - 1 ? size - 1 : 1);
    memcpy(copy, data + 1, size - 1);
    buf = copy;
    h1 = run(buf, size - 1, 0, &st1, &n1);
    h2 = run(buf, size - 1, (size_t)(data[0] % 9) + 1, &st2, &n2);
    if (n1 < MAX_REPLIES && n2 < MAX_REPLIES) {
        FUZZ_CHECK(st1 == st2);
        if (st1 == REDIS_OK)
            FUZZ_CHECK(n1 == n2 && h1 == h2);
    }
    if (size - 1 < 1024) {
        struct pm_redis_url u;
        char err[PM_ERRMSG_SIZE];

        url = pm_xstrndup(buf, size - 1);
        memset(&u, 0, sizeof u);
        if (pm_redis_url_parse(url, &u, err, sizeof err) == PM_OK) {
            FUZZ_CHECK(u.host[0] != '\0');
            FUZZ_CHECK(u.port >= 1 && u.port <= 65535);
        }
        free(url);
    }
    free(copy);
    return 0;
}
