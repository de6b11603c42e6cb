/*
 * fuzz_http: drives core/pm_http.c's three parsers on the same bytes:
 * pm_http_parse (request head), pm_http_parse_response (response head)
 * and pm_http_chunked_feed (chunked body scanner/decoder).
 *
 * Input: byte 0 seeds the head limit and how the chunked body is split;
 * the rest is the message.
 *
 * Asserts: a parsed head has head_len <= len and <= max_head, every
 * pointer (method, target, path, query, header names and values, reason)
 * lies inside the head, path and query lie inside the target, nheaders
 * is within PM_HTTP_MAX_HEADERS, Content-Length is -1 or >= 0 and never
 * together with chunked; parsing exactly the head again gives the same
 * result (a head does not depend on what follows it); a refused request
 * carries one of the documented statuses, a refused response an error
 * text. The chunked scanner, fed the body in pieces, uses no more than
 * it was given, reports the same bytes used, the same end and the same
 * decoded payload as one call over the whole body, stays refused once
 * refused, and decodes no more bytes than it used.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include <event2/buffer.h>

#include "fuzz.h"
#include "pm_http.h"
#include "pm_util.h"

static bool
inside(const char *p, size_t n, const char *lo, size_t lolen)
{
    return p >= lo && n <= lolen && (size_t)(p - lo) <= lolen - n;
}

static void
check_headers(const struct pm_http_header *h, size_t n, const char *buf,
              size_t head_len)
{
    size_t i;

    FUZZ_CHECK(n <= PM_HTTP_MAX_HEADERS);
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(h[i].name_len > 0);
        FUZZ_CHECK(inside(h[i].name, h[i].name_len, buf, head_len));
        FUZZ_CHECK(inside(h[i].value, h[i].value_len, buf, head_len));
        FUZZ_CHECK(memchr(h[i].value, '\n', h[i].value_len) == NULL);
        FUZZ_CHECK(memchr(h[i].value, '\0', h[i].value_len) == NULL);
    }
}

static void
fuzz_request(const char *buf, size_t len, size_t max_head)
{
    static struct pm_http_request req, again;
    int status = 0, rv;

    rv = pm_http_parse(buf, len, max_head, &req, &status);
    if (rv == PM_EPROTO) {
        FUZZ_CHECK(status == 400 || status == 414 || status == 431 ||
                   status == 501 || status == 505);
        return;
    }
    FUZZ_CHECK(rv == PM_OK || rv == PM_EAGAIN);
    if (rv == PM_EAGAIN)
        return;
    FUZZ_CHECK(req.head_len > 0 && req.head_len <= len);
    FUZZ_CHECK(req.head_len <= max_head);
    FUZZ_CHECK(req.method_len > 0);
    FUZZ_CHECK(inside(req.method, req.method_len, buf, req.head_len));
    FUZZ_CHECK(inside(req.target, req.target_len, buf, req.head_len));
    FUZZ_CHECK(inside(req.path, req.path_len, req.target, req.target_len));
    if (req.query != NULL)
        FUZZ_CHECK(
            inside(req.query, req.query_len, req.target, req.target_len));
    FUZZ_CHECK(req.content_length >= -1);
    FUZZ_CHECK(!(req.chunked && req.content_length >= 0));
    check_headers(req.headers, req.nheaders, buf, req.head_len);
    if (req.nheaders > 0) {
        char name[64];
        size_t n = req.headers[0].name_len < sizeof name - 1
                       ? req.headers[0].name_len
                       : sizeof name - 1;

        memcpy(name, req.headers[0].name, n);
        name[n] = '\0';
        if (memchr(name, '\0', n) == NULL && n == req.headers[0].name_len)
            FUZZ_CHECK(pm_http_header_get(&req, name) != NULL);
        (void)pm_http_header_has_token(&req.headers[0], "upgrade");
    }
    {
        char out[32];

        rv = pm_http_query_param(&req, "room", out, sizeof out);
        FUZZ_CHECK(rv == PM_OK || rv == PM_ENOTFOUND || rv == PM_ELIMIT);
        if (rv == PM_OK)
            FUZZ_CHECK(memchr(out, '\0', sizeof out) != NULL);
    }
    /* The head alone parses the same. */
    rv = pm_http_parse(buf, req.head_len, max_head, &again, &status);
    FUZZ_CHECK(rv == PM_OK);
    FUZZ_CHECK(again.head_len == req.head_len);
    FUZZ_CHECK(again.nheaders == req.nheaders);
    FUZZ_CHECK(again.content_length == req.content_length);
    FUZZ_CHECK(again.chunked == req.chunked);
    FUZZ_CHECK(again.keep_alive == req.keep_alive);
    FUZZ_CHECK(again.upgrade_websocket == req.upgrade_websocket);
}

static void
fuzz_response(const char *buf, size_t len, size_t max_head)
{
    static struct pm_http_response res, again;
    int rv;

    memset(&res, 0, sizeof res);
    rv = pm_http_parse_response(buf, len, max_head, &res);
    if (rv == PM_EPROTO) {
        FUZZ_CHECK(res.error != NULL);
        return;
    }
    FUZZ_CHECK(rv == PM_OK || rv == PM_EAGAIN || rv == PM_ELIMIT);
    if (rv != PM_OK)
        return;
    FUZZ_CHECK(res.head_len > 0 && res.head_len <= len);
    FUZZ_CHECK(res.head_len <= max_head);
    FUZZ_CHECK(res.status >= 100 && res.status <= 999);
    FUZZ_CHECK(inside(res.reason, res.reason_len, buf, res.head_len));
    FUZZ_CHECK(res.content_length >= -1);
    FUZZ_CHECK(!(res.chunked && res.content_length >= 0));
    check_headers(res.headers, res.nheaders, buf, res.head_len);
    (void)pm_http_response_has_body(&res, "GET", 3);
    (void)pm_http_response_has_body(&res, "HEAD", 4);
    (void)pm_http_response_has_body(&res, "CONNECT", 7);
    memset(&again, 0, sizeof again);
    rv = pm_http_parse_response(buf, res.head_len, max_head, &again);
    FUZZ_CHECK(rv == PM_OK);
    FUZZ_CHECK(again.head_len == res.head_len);
    FUZZ_CHECK(again.status == res.status);
    FUZZ_CHECK(again.content_length == res.content_length);
    FUZZ_CHECK(again.chunked == res.chunked);
}

static void
fuzz_chunked(const char *buf, size_t len, uint8_t seed)
{
    struct pm_http_chunked whole, split;
    struct evbuffer *d1 = evbuffer_new(), *d2 = evbuffer_new();
    size_t used1 = 0, used2 = 0, off = 0, step = (size_t)(seed % 7) + 1;
    bool done1 = false, done2 = false;
    int rv1, rv2 = PM_OK;

    pm_http_chunked_init(&whole);
    rv1 = pm_http_chunked_feed(&whole, buf, len, d1, &used1, &done1);
    FUZZ_CHECK(rv1 == PM_OK || rv1 == PM_EPROTO);
    FUZZ_CHECK(used1 <= len);
    FUZZ_CHECK(evbuffer_get_length(d1) <= used1);
    if (rv1 == PM_OK && !done1)
        FUZZ_CHECK(used1 == len); /* it takes all it is given until done */

    pm_http_chunked_init(&split);
    while (off < len) {
        size_t n = len - off < step ? len - off : step, used = 0;
        bool done = false;

        rv2 = pm_http_chunked_feed(&split, buf + off, n, d2, &used, &done);
        FUZZ_CHECK(used <= n);
        used2 += used;
        done2 = done;
        if (rv2 != PM_OK || done)
            break;
        FUZZ_CHECK(used == n);
        off += n;
        step = step * 3 % 11 + 1; /* vary the piece sizes */
    }
    if (len == 0) {
        size_t used = 0;

        rv2 = pm_http_chunked_feed(&split, buf, 0, d2, &used, &done2);
        FUZZ_CHECK(used == 0);
    }
    FUZZ_CHECK(rv1 == rv2);
    FUZZ_CHECK(done1 == done2);
    FUZZ_CHECK(used1 == used2);
    FUZZ_CHECK(evbuffer_get_length(d1) == evbuffer_get_length(d2));
    if (evbuffer_get_length(d1) > 0)
        FUZZ_CHECK(memcmp(evbuffer_pullup(d1, -1), evbuffer_pullup(d2, -1),
                          evbuffer_get_length(d1)) == 0);
    if (rv2 == PM_EPROTO) { /* refused for good */
        size_t used = 1;
        bool done = true;

        FUZZ_CHECK(pm_http_chunked_feed(&split, "0\r\n\r\n", 5, NULL, &used,
                                        &done) == PM_EPROTO);
        FUZZ_CHECK(used == 0 && !done);
    }
    if (done2) { /* nothing more belongs to the body */
        size_t used = 1;
        bool done = false;

        FUZZ_CHECK(pm_http_chunked_feed(&split, "x", 1, NULL, &used, &done) ==
                   PM_OK);
        FUZZ_CHECK(used == 0 && done);
    }
    evbuffer_free(d1);
    evbuffer_free(d2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[] = {8192, 64, 512, 16384};
    const char *buf;
    size_t len, max_head;
    char *copy;

    if (size < 1)
        return 0;
    max_head = limits[data[0] & 3];
    len = size - 1;
    /* An exact-size heap copy: ASan sees any read past the end. */
    copy = pm_xmalloc(len ? len : 1);
    memcpy(copy, data + 1, len);
    buf = copy;
    fuzz_request(buf, len, max_head);
    fuzz_response(buf, len, max_head);
    fuzz_chunked(buf, len, data[0]);
    free(copy);
    return 0;
}
