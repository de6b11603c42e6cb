/*
 * Unit tests for pm_http (core/pm_http.h): the strict request-head parser
 * (fields, incomplete input, size limits, the smuggling defences: bare LF
 * or CR, NUL, obs-fold, whitespace before the colon, Content-Length with
 * Transfer-Encoding, conflicting lengths, unknown codings; versions, Host,
 * the header count limit, and every split offset), the response-head
 * parser (framing, transfer codings, keep-alive, bodyless responses,
 * reason phrases, limits, malformed heads), the chunked-body scanner
 * (whole and split at every piece size, extensions, trailers, the next
 * message after the body, bad syntax, size overflow, line and trailer
 * limits, decoding), the header and query helpers, reason phrases and the
 * response writer. Every parse runs over a heap copy of exactly the given
 * length so a sanitizer build catches reads past the end.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "pm_test.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pm_http.h"
#include "pm_util.h"

#define MAX_HEAD 8192

/* One parse over an exact-size heap copy; fields point into buf. */
struct parsed {
    char *buf;
    size_t len;
    int rc;
    int status;
    struct pm_http_request req;
};

static struct parsed *
parse_n(const char *s, size_t len, size_t max_head)
{
    struct parsed *p = calloc(1, sizeof(*p));

    ck_assert_ptr_nonnull(p);
    p->buf = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p->buf);
    if (len)
        memcpy(p->buf, s, len);
    p->len = len;
    p->rc = pm_http_parse(p->buf, len, max_head, &p->req, &p->status);
    return p;
}

static void
parsed_free(struct parsed *p)
{
    free(p->buf);
    free(p);
}

#define LIT(s) s, sizeof(s) - 1

/* A counted string equals a literal. */
#define ASSERT_SPAN(ptr, len, lit)                                             \
    do {                                                                       \
        ck_assert_uint_eq((len), strlen(lit));                                 \
        ck_assert_mem_eq((ptr), (lit), strlen(lit));                           \
    } while (0)

/* Printable form of a request for failure messages. */
static const char *
show(const char *s, size_t len)
{
    static char out[512];
    size_t o = 0;

    for (size_t i = 0; i < len && o + 5 < sizeof(out); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02X", c);
    }
    out[o] = '\0';
    return out;
}

static void
expect_status(const char *s, size_t len, size_t max_head, int want)
{
    struct parsed *p = parse_n(s, len, max_head);

    ck_assert_msg(p->rc == PM_EPROTO && p->status == want,
                  "\"%s\": rc %d status %d, want PM_EPROTO %d", show(s, len),
                  p->rc, p->status, want);
    parsed_free(p);
}

static void
expect_ok(const char *s, size_t len)
{
    struct parsed *p = parse_n(s, len, MAX_HEAD);

    ck_assert_msg(p->rc == PM_OK, "\"%s\": rc %d status %d", show(s, len),
                  p->rc, p->status);
    parsed_free(p);
}

/* ---- well-formed requests --------------------------------------------- */

static const char ws_req[] = "GET /ws?room=abc&x=1 HTTP/1.1\r\n"
                             "Host: example.com\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: keep-alive, Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "\r\n";

START_TEST(simple_get)
{
    struct parsed *p = parse_n(LIT(ws_req), MAX_HEAD);
    const struct pm_http_request *r = &p->req;

    ck_assert_int_eq(p->rc, PM_OK);
    ASSERT_SPAN(r->method, r->method_len, "GET");
    ASSERT_SPAN(r->target, r->target_len, "/ws?room=abc&x=1");
    ASSERT_SPAN(r->path, r->path_len, "/ws");
    ck_assert_ptr_nonnull(r->query);
    ASSERT_SPAN(r->query, r->query_len, "room=abc&x=1");
    ck_assert_int_eq(r->minor, 1);
    ck_assert_uint_eq(r->nheaders, 5);
    ASSERT_SPAN(r->headers[0].name, r->headers[0].name_len, "Host");
    ASSERT_SPAN(r->headers[0].value, r->headers[0].value_len, "example.com");
    ASSERT_SPAN(r->headers[3].name, r->headers[3].name_len,
                "Sec-WebSocket-Key");
    ASSERT_SPAN(r->headers[4].value, r->headers[4].value_len, "13");
    ck_assert(r->keep_alive);
    ck_assert(r->upgrade_websocket);
    ck_assert(!r->chunked);
    ck_assert_int_eq(r->content_length, -1);
    ck_assert_uint_eq(r->head_len, sizeof(ws_req) - 1);
    /* pointers are into the buffer */
    ck_assert_ptr_eq(r->method, p->buf);
    ck_assert_ptr_eq(r->target, p->buf + 4);
    parsed_free(p);
}
END_TEST

START_TEST(post_with_body_after_head)
{
    static const char req[] = "POST /api/v1/items HTTP/1.1\r\n"
                              "Host: a\r\n"
                              "Content-Length: 11\r\n"
                              "\r\n"
                              "hello world";
    struct parsed *p = parse_n(LIT(req), MAX_HEAD);
    const struct pm_http_request *r = &p->req;

    ck_assert_int_eq(p->rc, PM_OK);
    ASSERT_SPAN(r->method, r->method_len, "POST");
    ASSERT_SPAN(r->path, r->path_len, "/api/v1/items");
    ASSERT_SPAN(r->target, r->target_len, "/api/v1/items");
    ck_assert_ptr_null(r->query);
    ck_assert_int_eq(r->content_length, 11);
    ck_assert(!r->chunked);
    ck_assert(r->keep_alive);
    ck_assert(!r->upgrade_websocket);
    ck_assert_uint_eq(r->head_len, sizeof(req) - 1 - 11);
    parsed_free(p);
}
END_TEST

START_TEST(empty_query)
{
    struct parsed *p =
        parse_n(LIT("GET /x? HTTP/1.1\r\nHost: a\r\n\r\n"), MAX_HEAD);

    ck_assert_int_eq(p->rc, PM_OK);
    ASSERT_SPAN(p->req.path, p->req.path_len, "/x");
    ck_assert_ptr_nonnull(p->req.query);
    ck_assert_uint_eq(p->req.query_len, 0);
    parsed_free(p);
}
END_TEST

START_TEST(header_value_ows_trimmed)
{
    struct parsed *p = parse_n(LIT("GET / HTTP/1.1\r\n"
                                   "Host:a\r\n"
                                   "X-Pad: \t v a l \t \r\n"
                                   "X-Empty:\r\n"
                                   "X-Blank:   \r\n"
                                   "\r\n"),
                               MAX_HEAD);
    const struct pm_http_request *r = &p->req;

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_uint_eq(r->nheaders, 4);
    ASSERT_SPAN(r->headers[0].value, r->headers[0].value_len, "a");
    ASSERT_SPAN(r->headers[1].value, r->headers[1].value_len, "v a l");
    ck_assert_uint_eq(r->headers[2].value_len, 0);
    ck_assert_uint_eq(r->headers[3].value_len, 0);
    parsed_free(p);
}
END_TEST

START_TEST(incomplete_head_eagain)
{
    static const char *parts[] = {
        "",
        "G",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: a",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r",
    };

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        struct parsed *p = parse_n(parts[i], strlen(parts[i]), MAX_HEAD);
        ck_assert_msg(p->rc == PM_EAGAIN, "\"%s\": rc %d",
                      show(parts[i], strlen(parts[i])), p->rc);
        parsed_free(p);
    }
}
END_TEST

/* ---- size limits ------------------------------------------------------ */

START_TEST(head_over_limit_without_end)
{
    char buf[300];
    int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX-Long: ");

    memset(buf + n, 'a', sizeof(buf) - (size_t)n);
    expect_status(buf, sizeof(buf), 128, 431);
    /*
     * Below the limit it is still incomplete. (At exactly max_head bytes
     * without the end the head can only finish over the limit, so either
     * answer is right there and it is not tested.)
     */
    {
        struct parsed *p = parse_n(buf, 100, 128);
        ck_assert_int_eq(p->rc, PM_EAGAIN);
        parsed_free(p);
    }
}
END_TEST

/* A complete head longer than max_head is refused; exactly max is fine. */
START_TEST(complete_head_over_limit)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "GET / HTTP/1.1\r\nHost: a\r\nX-Long: %0200d\r\n\r\n", 7);
    struct parsed *p;

    ck_assert_int_gt(n, 200);
    p = parse_n(buf, (size_t)n, (size_t)n);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_uint_eq(p->req.head_len, (size_t)n);
    parsed_free(p);
    expect_status(buf, (size_t)n, (size_t)n - 1, 431);
    expect_status(buf, (size_t)n, 64, 431);
}
END_TEST

/*
 * The header names 414 and 431 among the answers but not which one a
 * request line over the limit gets, so either is accepted here.
 */
START_TEST(request_line_too_long)
{
    char buf[600];
    int n = snprintf(buf, sizeof(buf),
                     "GET /%0400d HTTP/1.1\r\nHost: a\r\n\r\n", 1);
    struct parsed *p;

    /* complete head */
    p = parse_n(buf, (size_t)n, 128);
    ck_assert_int_eq(p->rc, PM_EPROTO);
    ck_assert_msg(p->status == 414 || p->status == 431, "status %d", p->status);
    parsed_free(p);
    /* request line not even finished */
    p = parse_n(buf, 300, 128);
    ck_assert_int_eq(p->rc, PM_EPROTO);
    ck_assert_msg(p->status == 414 || p->status == 431, "status %d", p->status);
    parsed_free(p);
}
END_TEST

/* Build a request with nheaders header lines (Host first). */
static char *
many_headers(size_t nheaders, size_t *len)
{
    size_t cap = 64 + nheaders * 32;
    char *buf = malloc(cap);
    size_t o = 0;

    ck_assert_ptr_nonnull(buf);
    o += (size_t)snprintf(buf + o, cap - o, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 1; i < nheaders; i++)
        o += (size_t)snprintf(buf + o, cap - o, "X-H%zu: %zu\r\n", i, i);
    o += (size_t)snprintf(buf + o, cap - o, "\r\n");
    *len = o;
    return buf;
}

START_TEST(max_headers)
{
    size_t len;
    char *buf = many_headers(PM_HTTP_MAX_HEADERS, &len);
    struct parsed *p = parse_n(buf, len, 65536);

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_uint_eq(p->req.nheaders, PM_HTTP_MAX_HEADERS);
    parsed_free(p);
    free(buf);

    buf = many_headers(PM_HTTP_MAX_HEADERS + 1, &len);
    expect_status(buf, len, 65536, 431);
    free(buf);
}
END_TEST

/* ---- rejected heads --------------------------------------------------- */

struct bad_case {
    const char *s;
    size_t len;
    int status;
    const char *why;
};

#define BAD(lit, st, why)                                                      \
    {                                                                          \
        lit, sizeof(lit) - 1, st, why                                          \
    }

static const struct bad_case bad_cases[] = {
    BAD("GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "bare LF after request line"),
    BAD("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, "bare LF in headers"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "bare LF blank line"),
    BAD("GET / HTTP/1.1\nHost: a\n\n", 400, "LF-only head"),
    BAD("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400, "bare CR in value"),
    BAD("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare CR in line"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX\r: b\r\n\r\n", 400, "bare CR in name"),
    BAD("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 400, "NUL in value"),
    BAD("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "NUL in target"),
    BAD("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", 400, "NUL in name"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n folded\r\n\r\n", 400,
        "obs-fold space"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tfolded\r\n\r\n", 400,
        "obs-fold tab"),
    BAD("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "space before first field"),
    BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "space before colon"),
    BAD("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400, "tab before colon"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400, "empty name"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "no colon"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX y: 1\r\n\r\n", 400, "space in name"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX\x01y: 1\r\n\r\n", 400, "CTL in name"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        400, "CL then TE"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 5\r\n\r\n",
        400, "TE then CL"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        "Content-Length: 6\r\n\r\n",
        400, "conflicting CL"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400,
        "CL abc"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400,
        "CL -1"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400,
        "CL +5"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400,
        "CL empty"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400,
        "CL 1 2"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400,
        "CL hex"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n", 400,
        "CL 5a"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 99999999999999999999999\r\n\r\n",
        400, "CL overflow"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
        "TE gzip"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501, "TE gzip, chunked"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: deflate\r\n\r\n", 501,
        "TE deflate"),
    BAD("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0"),
    BAD("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "HTTP/3.0"),
    BAD("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400, "1.1 without Host"),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "two Host"),
    BAD("G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CTL in method"),
    BAD(" / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "empty method"),
    BAD("GET HTTP/1.1\r\nHost: a\r\n\r\n", 400, "no target"),
    BAD("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400, "bad protocol name"),
    BAD("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400, "junk after version"),
    BAD("GET / HTTP/1\r\nHost: a\r\n\r\n", 400, "short version"),
};

START_TEST(rejected_heads)
{
    const struct bad_case *c = &bad_cases[_i];
    struct parsed *p = parse_n(c->s, c->len, MAX_HEAD);

    ck_assert_msg(p->rc == PM_EPROTO && p->status == c->status,
                  "%s: \"%s\": rc %d status %d, want PM_EPROTO %d", c->why,
                  show(c->s, c->len), p->rc, p->status, c->status);
    parsed_free(p);
}
END_TEST

/* ---- framing headers -------------------------------------------------- */

START_TEST(same_content_length_twice)
{
    struct parsed *p = parse_n(LIT("PUT /x HTTP/1.1\r\nHost: a\r\n"
                                   "Content-Length: 5\r\n"
                                   "Content-Length: 5\r\n\r\n"),
                               MAX_HEAD);

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(p->req.content_length, 5);
    parsed_free(p);
}
END_TEST

START_TEST(content_length_values)
{
    struct parsed *p = parse_n(LIT("PUT /x HTTP/1.1\r\nHost: a\r\n"
                                   "content-length:   42  \r\n\r\n"),
                               MAX_HEAD);

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(p->req.content_length, 42);
    parsed_free(p);

    p = parse_n(LIT("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(p->req.content_length, 0);
    parsed_free(p);
}
END_TEST

START_TEST(chunked)
{
    struct parsed *p = parse_n(LIT("POST /x HTTP/1.1\r\nHost: a\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n"),
                               MAX_HEAD);

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(p->req.chunked);
    ck_assert_int_eq(p->req.content_length, -1);
    parsed_free(p);
}
END_TEST

/* ---- versions and connection semantics -------------------------------- */

START_TEST(keep_alive_rules)
{
    struct parsed *p;

    p = parse_n(LIT("GET / HTTP/1.0\r\n\r\n"), MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(p->req.minor, 0);
    ck_assert(!p->req.keep_alive);
    parsed_free(p);

    p = parse_n(LIT("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(p->req.keep_alive);
    parsed_free(p);

    p = parse_n(LIT("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(p->req.keep_alive);
    parsed_free(p);

    p = parse_n(LIT("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(p->req.minor, 1);
    ck_assert(p->req.keep_alive);
    parsed_free(p);

    p = parse_n(LIT("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(!p->req.keep_alive);
    parsed_free(p);

    p = parse_n(LIT("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(!p->req.keep_alive);
    parsed_free(p);
}
END_TEST

START_TEST(valid_edge_requests)
{
    expect_ok(LIT("GET /health HTTP/1.0\r\n\r\n"));
    expect_ok(
        LIT("get / HTTP/1.1\r\nHost: a\r\n\r\n")); /* methods are tokens */
}
END_TEST

START_TEST(upgrade_detection)
{
    struct parsed *p;

    p = parse_n(LIT("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n"
                    "Connection: Upgrade\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(p->req.upgrade_websocket);
    parsed_free(p);

    /* Upgrade without Connection: upgrade */
    p = parse_n(LIT("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                    "Connection: keep-alive\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(!p->req.upgrade_websocket);
    parsed_free(p);

    /* Connection: upgrade to something else */
    p = parse_n(LIT("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
                    "Connection: Upgrade\r\n\r\n"),
                MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(!p->req.upgrade_websocket);
    parsed_free(p);

    p = parse_n(LIT("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert(!p->req.upgrade_websocket);
    parsed_free(p);
}
END_TEST

/* ---- helpers ---------------------------------------------------------- */

START_TEST(header_get_case_insensitive)
{
    struct parsed *p = parse_n(LIT("GET / HTTP/1.1\r\nHost: a\r\n"
                                   "X-Dup: first\r\nx-dup: second\r\n\r\n"),
                               MAX_HEAD);
    const struct pm_http_header *h;

    ck_assert_int_eq(p->rc, PM_OK);
    h = pm_http_header_get(&p->req, "host");
    ck_assert_ptr_nonnull(h);
    ASSERT_SPAN(h->value, h->value_len, "a");
    ck_assert_ptr_eq(pm_http_header_get(&p->req, "HOST"), h);
    h = pm_http_header_get(&p->req, "X-DUP");
    ck_assert_ptr_nonnull(h);
    ASSERT_SPAN(h->value, h->value_len, "first");
    ck_assert_ptr_null(pm_http_header_get(&p->req, "X-Missing"));
    ck_assert_ptr_null(pm_http_header_get(&p->req, "Hos"));
    ck_assert_ptr_null(pm_http_header_get(&p->req, "Hostx"));
    parsed_free(p);
}
END_TEST

static struct pm_http_header
hdr(const char *name, const char *value)
{
    struct pm_http_header h = {name, strlen(name), value, strlen(value)};
    return h;
}

START_TEST(header_has_token)
{
    struct pm_http_header h = hdr("Connection", "keep-alive, Upgrade");

    ck_assert(pm_http_header_has_token(&h, "upgrade"));
    ck_assert(pm_http_header_has_token(&h, "Upgrade"));
    ck_assert(pm_http_header_has_token(&h, "keep-alive"));
    ck_assert(!pm_http_header_has_token(&h, "close"));
    ck_assert(!pm_http_header_has_token(&h, "keep"));
    ck_assert(!pm_http_header_has_token(&h, "alive"));

    h = hdr("Connection", "keep-alive,Upgrade");
    ck_assert(pm_http_header_has_token(&h, "upgrade"));
    h = hdr("Connection", "keep-alive , upgrade ,close");
    ck_assert(pm_http_header_has_token(&h, "upgrade"));
    ck_assert(pm_http_header_has_token(&h, "close"));
    h = hdr("Connection", "Upgraded, keep-alive");
    ck_assert(!pm_http_header_has_token(&h, "upgrade"));
    h = hdr("Connection", "");
    ck_assert(!pm_http_header_has_token(&h, "upgrade"));
    h = hdr("Upgrade", "websocket");
    ck_assert(pm_http_header_has_token(&h, "WebSocket"));
}
END_TEST

START_TEST(query_param_decoding)
{
    struct parsed *p =
        parse_n(LIT("GET /p?a=1&name=J%C3%BCrgen+M&empty=&plus=a%2Bb"
                    "&xa=9&pct=%41%2f HTTP/1.1\r\nHost: h\r\n\r\n"),
                MAX_HEAD);
    char out[64];

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(pm_http_query_param(&p->req, "a", out, sizeof(out)),
                     PM_OK);
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(pm_http_query_param(&p->req, "name", out, sizeof(out)),
                     PM_OK);
    ck_assert_str_eq(out, "J\xC3\xBCrgen M");
    ck_assert_int_eq(pm_http_query_param(&p->req, "plus", out, sizeof(out)),
                     PM_OK);
    ck_assert_str_eq(out, "a+b");
    ck_assert_int_eq(pm_http_query_param(&p->req, "pct", out, sizeof(out)),
                     PM_OK);
    ck_assert_str_eq(out, "A/");
    ck_assert_int_eq(pm_http_query_param(&p->req, "empty", out, sizeof(out)),
                     PM_OK);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(pm_http_query_param(&p->req, "xa", out, sizeof(out)),
                     PM_OK);
    ck_assert_str_eq(out, "9");
    ck_assert_int_eq(pm_http_query_param(&p->req, "missing", out, sizeof(out)),
                     PM_ENOTFOUND);
    ck_assert_int_eq(pm_http_query_param(&p->req, "nam", out, sizeof(out)),
                     PM_ENOTFOUND);
    parsed_free(p);
}
END_TEST

START_TEST(query_param_limits)
{
    struct parsed *p = parse_n(
        LIT("GET /p?name=J%C3%BCrgen+M HTTP/1.1\r\nHost: h\r\n\r\n"), MAX_HEAD);
    char out[16];

    /* decoded "J\xC3\xBCrgen M" is 9 bytes: needs 10 with the NUL */
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(pm_http_query_param(&p->req, "name", out, 9), PM_ELIMIT);
    ck_assert_int_eq(pm_http_query_param(&p->req, "name", out, 10), PM_OK);
    ck_assert_str_eq(out, "J\xC3\xBCrgen M");
    ck_assert_int_eq(pm_http_query_param(&p->req, "name", out, 1), PM_ELIMIT);
    parsed_free(p);

    p = parse_n(LIT("GET /p HTTP/1.1\r\nHost: h\r\n\r\n"), MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(pm_http_query_param(&p->req, "name", out, sizeof(out)),
                     PM_ENOTFOUND);
    parsed_free(p);
}
END_TEST

/* With no room even for the NUL, nothing is written. */
START_TEST(query_param_zero_outlen)
{
    struct parsed *p =
        parse_n(LIT("GET /p?a=1&e= HTTP/1.1\r\nHost: h\r\n\r\n"), MAX_HEAD);
    char out[2] = {'Z', 'Z'};

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_int_eq(pm_http_query_param(&p->req, "a", out, 0), PM_ELIMIT);
    ck_assert_int_eq(out[0], 'Z');
    ck_assert_int_eq(pm_http_query_param(&p->req, "e", out, 0), PM_ELIMIT);
    ck_assert_int_eq(out[0], 'Z');
    ck_assert_int_eq(pm_http_query_param(&p->req, "e", out, 1), PM_OK);
    ck_assert_int_eq(out[0], '\0');
    parsed_free(p);
}
END_TEST

/* ---- incremental arrival ---------------------------------------------- */

static const char split_req[] =
    "POST /rooms/42/join?token=abc%20def&x=1 HTTP/1.1\r\n"
    "Host: signal.example:8080\r\n"
    "User-Agent: test/1.0\r\n"
    "Content-Length: 17\r\n"
    "Connection: keep-alive\r\n"
    "X-Empty:\r\n"
    "\r\n";

/*
 * Every proper prefix is PM_EAGAIN; the whole head then parses to the
 * same fields (offsets into the buffer) whatever the first split was.
 */
START_TEST(split_at_every_offset)
{
    size_t len = sizeof(split_req) - 1;
    struct parsed *ref = parse_n(split_req, len, MAX_HEAD);

    ck_assert_int_eq(ref->rc, PM_OK);
    ck_assert_uint_eq(ref->req.head_len, len);
    for (size_t cut = 0; cut < len; cut++) {
        struct parsed *p = parse_n(split_req, cut, MAX_HEAD);
        ck_assert_msg(p->rc == PM_EAGAIN, "prefix %zu: rc %d status %d", cut,
                      p->rc, p->status);
        parsed_free(p);
    }
    {
        struct parsed *p = parse_n(split_req, len, MAX_HEAD);
        const struct pm_http_request *a = &ref->req, *b = &p->req;

        ck_assert_int_eq(p->rc, PM_OK);
        ck_assert_uint_eq(b->head_len, a->head_len);
        ck_assert_uint_eq(b->nheaders, a->nheaders);
        ck_assert_int_eq(b->minor, a->minor);
        ck_assert_int_eq(b->content_length, 17);
        ck_assert(b->keep_alive);
        ck_assert_uint_eq(b->method - p->buf, a->method - ref->buf);
        ck_assert_uint_eq(b->path_len, a->path_len);
        ck_assert_uint_eq(b->query - p->buf, a->query - ref->buf);
        ck_assert_uint_eq(b->query_len, a->query_len);
        for (size_t i = 0; i < a->nheaders; i++) {
            ck_assert_uint_eq(b->headers[i].name - p->buf,
                              a->headers[i].name - ref->buf);
            ck_assert_uint_eq(b->headers[i].name_len, a->headers[i].name_len);
            ck_assert_uint_eq(b->headers[i].value_len, a->headers[i].value_len);
        }
        parsed_free(p);
    }
    parsed_free(ref);
}
END_TEST

/* ---- responses -------------------------------------------------------- */

START_TEST(reason_phrases)
{
    ck_assert_str_eq(pm_http_reason(200), "OK");
    ck_assert_str_eq(pm_http_reason(101), "Switching Protocols");
    ck_assert_str_eq(pm_http_reason(400), "Bad Request");
    ck_assert_str_eq(pm_http_reason(404), "Not Found");
    ck_assert_str_eq(pm_http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(pm_http_reason(503), "Service Unavailable");
    ck_assert_ptr_nonnull(pm_http_reason(599));
}
END_TEST

static char *
buffer_text(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);

    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static bool
ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && memcmp(s + n - t, tail, t) == 0;
}

START_TEST(write_response)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    pm_http_write_response(b, 200, "text/plain", "X-Extra: 1\r\n", "hi", 2,
                           true, false);
    s = buffer_text(b);
    ck_assert_msg(strncmp(s, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", s);
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nDate: "));
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nServer: "));
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nContent-Type: text/plain\r\n"));
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nContent-Length: 2\r\n"));
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nConnection: keep-alive\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "\r\nX-Extra: 1\r\n"));
    ck_assert_msg(ends_with(s, "\r\n\r\nhi"), "%s", s);
    free(s);

    /* HEAD: length kept, body omitted */
    pm_http_write_response(b, 404, "text/plain", NULL, "nope", 4, false, true);
    s = buffer_text(b);
    ck_assert_msg(strncmp(s, "HTTP/1.1 404 Not Found\r\n", 24) == 0, "%s", s);
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nContent-Length: 4\r\n"));
    ck_assert_ptr_nonnull(strcasestr(s, "\r\nConnection: close\r\n"));
    ck_assert_msg(ends_with(s, "\r\n\r\n"), "%s", s);
    free(s);

    /* no body, no type */
    pm_http_write_response(b, 204, NULL, NULL, NULL, 0, true, false);
    s = buffer_text(b);
    ck_assert_ptr_null(strcasestr(s, "Content-Type"));
    ck_assert_msg(ends_with(s, "\r\n\r\n"), "%s", s);
    free(s);
    evbuffer_free(b);
}
END_TEST

/* The header promises Content-Type "if body_len or ctype". */
START_TEST(write_response_body_without_type)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    pm_http_write_response(b, 200, NULL, NULL, "hi", 2, true, false);
    s = buffer_text(b);
    ck_assert_msg(strcasestr(s, "\r\nContent-Type: ") != NULL,
                  "no Content-Type for a body:\n%s", s);
    ck_assert_msg(ends_with(s, "\r\n\r\nhi"), "%s", s);
    free(s);
    evbuffer_free(b);
}
END_TEST

/* ---- response heads --------------------------------------------------- */

/* One response parse over an exact-size heap copy. */
struct rparsed {
    char *buf;
    size_t len;
    int rc;
    struct pm_http_response res;
};

static struct rparsed *
rparse_n(const char *s, size_t len, size_t max_head)
{
    struct rparsed *p = calloc(1, sizeof(*p));

    ck_assert_ptr_nonnull(p);
    p->buf = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p->buf);
    if (len)
        memcpy(p->buf, s, len);
    p->len = len;
    p->rc = pm_http_parse_response(p->buf, len, max_head, &p->res);
    return p;
}

static void
rparsed_free(struct rparsed *p)
{
    free(p->buf);
    free(p);
}

/* Parse a literal that must be a valid head; the caller frees. */
static struct rparsed *
rparse_ok(const char *s, size_t len)
{
    struct rparsed *p = rparse_n(s, len, MAX_HEAD);

    ck_assert_msg(p->rc == PM_OK, "\"%s\": rc %d (%s)", show(s, len), p->rc,
                  p->res.error ? p->res.error : "");
    return p;
}

static const char resp_200[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 5\r\n"
                               "X-Pad: \t v a l \t \r\n"
                               "\r\n"
                               "hello";

START_TEST(response_with_content_length)
{
    struct rparsed *p = rparse_ok(LIT(resp_200));
    const struct pm_http_response *r = &p->res;

    ck_assert_int_eq(r->status, 200);
    ck_assert_int_eq(r->minor, 1);
    ASSERT_SPAN(r->reason, r->reason_len, "OK");
    ck_assert_ptr_eq(r->reason, p->buf + 13);
    ck_assert_uint_eq(r->nheaders, 3);
    ASSERT_SPAN(r->headers[0].name, r->headers[0].name_len, "Content-Type");
    ASSERT_SPAN(r->headers[0].value, r->headers[0].value_len, "text/plain");
    ASSERT_SPAN(r->headers[2].value, r->headers[2].value_len, "v a l");
    ck_assert_int_eq(r->content_length, 5);
    ck_assert(!r->chunked);
    ck_assert(r->keep_alive);
    ck_assert_uint_eq(r->head_len, sizeof(resp_200) - 1 - 5);
    ck_assert_ptr_null(r->error);
    ck_assert(pm_http_response_has_body(r, LIT("GET")));
    rparsed_free(p);

    /* the same length twice is one length */
    p = rparse_ok(LIT("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n"
                      "content-length:   7  \r\n\r\n"));
    ck_assert_int_eq(p->res.content_length, 7);
    rparsed_free(p);

    /* neither header: the body ends with the connection */
    p = rparse_ok(LIT("HTTP/1.1 200 OK\r\n\r\n"));
    ck_assert_int_eq(p->res.content_length, -1);
    ck_assert(!p->res.chunked);
    ck_assert_uint_eq(p->res.nheaders, 0);
    rparsed_free(p);
}
END_TEST

START_TEST(response_transfer_codings)
{
    static const struct {
        const char *head;
        bool chunked;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip ,chunked , \r\n\r\n",
         true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
         "Transfer-Encoding: chunked\r\n\r\n",
         true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding:\r\n\r\n",
         true},
        /* chunked not last: the body ends with the connection */
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding: gzip\r\n\r\n",
         false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rparsed *p = rparse_ok(cases[i].head, strlen(cases[i].head));

        ck_assert_msg(p->res.chunked == cases[i].chunked, "%s",
                      show(cases[i].head, strlen(cases[i].head)));
        ck_assert_int_eq(p->res.content_length, -1);
        rparsed_free(p);
    }
}
END_TEST

START_TEST(response_keep_alive_rules)
{
    static const struct {
        const char *head;
        int minor;
        bool keep_alive;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\n\r\n", 1, true},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 1, false},
        {"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n\r\n", 1, false},
        {"HTTP/1.1 200 OK\r\nConnection: x\r\nConnection: close\r\n\r\n", 1,
         false},
        {"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", 1, true},
        {"HTTP/1.0 200 OK\r\n\r\n", 0, false},
        {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, true},
        {"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", 0, true},
        {"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n", 0, false},
        {"HTTP/1.2 200 OK\r\n\r\n", 2, true},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rparsed *p = rparse_ok(cases[i].head, strlen(cases[i].head));

        ck_assert_int_eq(p->res.minor, cases[i].minor);
        ck_assert_msg(p->res.keep_alive == cases[i].keep_alive, "%s",
                      show(cases[i].head, strlen(cases[i].head)));
        rparsed_free(p);
    }
}
END_TEST

START_TEST(response_bodyless)
{
    static const struct {
        const char *head;
        const char *method;
        bool body;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", true},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", false},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\n", "HEAD", false},
        {"HTTP/1.1 204 No Content\r\n\r\n", "GET", false},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET",
         false},
        {"HTTP/1.1 100 Continue\r\n\r\n", "POST", false},
        {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "GET", false},
        {"HTTP/1.1 199 Whatever\r\n\r\n", "GET", false},
        {"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", false},
        {"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n", "CONNECT",
         true},
        {"HTTP/1.1 205 Reset Content\r\n\r\n", "POST", true},
        {"HTTP/1.1 500 Oops\r\n\r\n", "DELETE", true},
        {"HTTP/1.1 200 OK\r\n\r\n", "HEADX", true},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rparsed *p = rparse_ok(cases[i].head, strlen(cases[i].head));

        ck_assert_msg(pm_http_response_has_body(&p->res, cases[i].method,
                                                strlen(cases[i].method)) ==
                          cases[i].body,
                      "%s to %s", show(cases[i].head, strlen(cases[i].head)),
                      cases[i].method);
        rparsed_free(p);
    }
}
END_TEST

START_TEST(response_reason_phrase)
{
    struct rparsed *p;

    p = rparse_ok(LIT("HTTP/1.1 200 \r\n\r\n"));
    ck_assert_int_eq(p->res.status, 200);
    ck_assert_uint_eq(p->res.reason_len, 0);
    rparsed_free(p);

    /* no space before an empty reason */
    p = rparse_ok(LIT("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"));
    ck_assert_int_eq(p->res.status, 404);
    ck_assert_uint_eq(p->res.reason_len, 0);
    ck_assert_int_eq(p->res.content_length, 0);
    rparsed_free(p);

    p = rparse_ok(LIT("HTTP/1.1 599 Not\tQuite \xc3\xa9 200 OK \r\n\r\n"));
    ck_assert_int_eq(p->res.status, 599);
    ASSERT_SPAN(p->res.reason, p->res.reason_len,
                "Not\tQuite \xc3\xa9 200 OK ");
    rparsed_free(p);

    p = rparse_ok(LIT("HTTP/1.1 999 Private\r\n\r\n"));
    ck_assert_int_eq(p->res.status, 999);
    rparsed_free(p);

    p = rparse_ok(LIT("HTTP/1.1 100 Continue\r\n\r\n"));
    ck_assert_int_eq(p->res.status, 100);
    rparsed_free(p);
}
END_TEST

static const char split_resp[] = "HTTP/1.1 201 Created\r\n"
                                 "Location: /items/7\r\n"
                                 "Content-Length: 2\r\n"
                                 "Connection: close\r\n"
                                 "X-Empty:\r\n"
                                 "\r\n";

/* Every proper prefix is PM_EAGAIN; the whole head parses. */
START_TEST(response_incomplete_eagain)
{
    size_t len = sizeof(split_resp) - 1;
    struct rparsed *p;

    for (size_t cut = 0; cut < len; cut++) {
        p = rparse_n(split_resp, cut, MAX_HEAD);
        ck_assert_msg(p->rc == PM_EAGAIN, "prefix %zu: rc %d", cut, p->rc);
        rparsed_free(p);
    }
    p = rparse_ok(split_resp, len);
    ck_assert_int_eq(p->res.status, 201);
    ASSERT_SPAN(p->res.reason, p->res.reason_len, "Created");
    ck_assert_uint_eq(p->res.head_len, len);
    ck_assert_uint_eq(p->res.nheaders, 4);
    ck_assert_int_eq(p->res.content_length, 2);
    ck_assert(!p->res.keep_alive);
    rparsed_free(p);
}
END_TEST

START_TEST(response_over_limit)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 200 OK\r\nX-Long: %0200d\r\n\r\n", 7);
    struct rparsed *p;

    ck_assert_int_gt(n, 200);
    /* a complete head of exactly max_head bytes is fine */
    p = rparse_n(buf, (size_t)n, (size_t)n);
    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_uint_eq(p->res.head_len, (size_t)n);
    rparsed_free(p);
    /* one byte over, complete or not */
    p = rparse_n(buf, (size_t)n, (size_t)n - 1);
    ck_assert_int_eq(p->rc, PM_ELIMIT);
    rparsed_free(p);
    p = rparse_n(buf, 150, 128);
    ck_assert_int_eq(p->rc, PM_ELIMIT);
    rparsed_free(p);
    /* below the limit it is still incomplete */
    p = rparse_n(buf, 100, 128);
    ck_assert_int_eq(p->rc, PM_EAGAIN);
    rparsed_free(p);
}
END_TEST

/* Build a response with nheaders header lines. */
static char *
many_response_headers(size_t nheaders, size_t *len)
{
    size_t cap = 64 + nheaders * 32;
    char *buf = malloc(cap);
    size_t o = 0;

    ck_assert_ptr_nonnull(buf);
    o += (size_t)snprintf(buf + o, cap - o, "HTTP/1.1 200 OK\r\n");
    for (size_t i = 0; i < nheaders; i++)
        o += (size_t)snprintf(buf + o, cap - o, "X-H%zu: %zu\r\n", i, i);
    o += (size_t)snprintf(buf + o, cap - o, "\r\n");
    *len = o;
    return buf;
}

START_TEST(response_max_headers)
{
    size_t len;
    char *buf = many_response_headers(PM_HTTP_MAX_HEADERS, &len);
    struct rparsed *p = rparse_n(buf, len, 65536);

    ck_assert_int_eq(p->rc, PM_OK);
    ck_assert_uint_eq(p->res.nheaders, PM_HTTP_MAX_HEADERS);
    rparsed_free(p);
    free(buf);

    buf = many_response_headers(PM_HTTP_MAX_HEADERS + 1, &len);
    p = rparse_n(buf, len, 65536);
    ck_assert_int_eq(p->rc, PM_EPROTO);
    ck_assert_ptr_nonnull(p->res.error);
    rparsed_free(p);
    free(buf);
}
END_TEST

struct bad_response {
    const char *s;
    size_t len;
    const char *error; /* res.error, or NULL: any */
};

#define BADR(lit, error)                                                       \
    {                                                                          \
        lit, sizeof(lit) - 1, error                                            \
    }

static const struct bad_response bad_responses[] = {
    BADR("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", NULL),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", NULL),
    BADR("HTTP/1.1 200 OK\r\nX: 1\r\n\n", NULL),
    BADR("HTTP/1.1 200 OK\n\n", NULL),
    BADR("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", NULL),
    BADR("HTTP/1.1 200 O\rK\r\n\r\n", NULL),
    BADR("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", NULL),
    BADR("HTTP/1.1 200 O\0K\r\n\r\n", NULL),
    BADR("HTTP/1.1 200 OK\r\nX: b\r\n folded\r\n\r\n", "obs-fold"),
    BADR("HTTP/1.1 200 OK\r\nX: b\r\n\tfolded\r\n\r\n", "obs-fold"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", "bad header line"),
    BADR("HTTP/1.1 200 OK\r\nX\t: 5\r\n\r\n", "bad header line"),
    BADR("HTTP/1.1 200 OK\r\n: empty\r\n\r\n", "bad header line"),
    BADR("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "bad header line"),
    BADR("HTTP/1.1 200 OK\r\nX y: 1\r\n\r\n", "bad header line"),
    BADR("HTTP/1.1 200 OK\r\nX: a\x01 b\r\n\r\n", "bad header value"),
    BADR("HTTP/2 200 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/2.0 200 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.x 200 OK\r\n\r\n", "bad status line"),
    BADR("http/1.1 200 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 20 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 099 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 2x0 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 200OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1  200 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1\t200 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 200 O\x7fK\r\n\r\n", "bad status line"),
    BADR("\r\nHTTP/1.1 200 OK\r\n\r\n", "bad status line"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n",
         "Content-Length with Transfer-Encoding"),
    BADR("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
         "Content-Length: 5\r\n\r\n",
         "Content-Length with Transfer-Encoding"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
         "Content-Length: 6\r\n\r\n",
         "conflicting Content-Length"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
         "bad Content-Length"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", "bad Content-Length"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", "bad Content-Length"),
    BADR("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
         "bad Content-Length"),
    BADR("HTTP/1.1 200 OK\r\n"
         "Content-Length: 99999999999999999999999\r\n\r\n",
         "bad Content-Length"),
    BADR("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
         "Transfer-Encoding in HTTP/1.0"),
};

START_TEST(rejected_responses)
{
    const struct bad_response *c = &bad_responses[_i];
    struct rparsed *p = rparse_n(c->s, c->len, MAX_HEAD);

    ck_assert_msg(p->rc == PM_EPROTO, "\"%s\": rc %d, want PM_EPROTO",
                  show(c->s, c->len), p->rc);
    ck_assert_ptr_nonnull(p->res.error);
    if (c->error != NULL)
        ck_assert_msg(strcmp(p->res.error, c->error) == 0,
                      "\"%s\": error \"%s\", want \"%s\"", show(c->s, c->len),
                      p->res.error, c->error);
    rparsed_free(p);
}
END_TEST

/* A bad byte is refused before the head is complete. */
START_TEST(response_bad_byte_before_the_end)
{
    struct rparsed *p = rparse_n(LIT("HTTP/1.1 200 OK\nX"), MAX_HEAD);

    ck_assert_int_eq(p->rc, PM_EPROTO);
    rparsed_free(p);
    p = rparse_n(LIT("HTTP/1.1 200 OK\r\nX: \0"), MAX_HEAD);
    ck_assert_int_eq(p->rc, PM_EPROTO);
    rparsed_free(p);
}
END_TEST

/* ---- chunked bodies --------------------------------------------------- */

struct chunk_run {
    int rc;
    size_t used; /* over all the feeds */
    bool done;
    struct evbuffer *data;
};

/*
 * Feed s[0..len) in pieces of step bytes (each an exact-size heap copy),
 * decoding unless scan_only, until done, an error or the end.
 */
static void
chunk_feed(const char *s, size_t len, size_t step, bool scan_only,
           struct chunk_run *r)
{
    struct pm_http_chunked ch;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    r->data = evbuffer_new();
    pm_http_chunked_init(&ch);
    while (off < len && !r->done && r->rc == PM_OK) {
        size_t n = len - off < step ? len - off : step, used = 0;
        char *piece = malloc(n);

        ck_assert_ptr_nonnull(piece);
        memcpy(piece, s + off, n);
        r->rc = pm_http_chunked_feed(&ch, piece, n, scan_only ? NULL : r->data,
                                     &used, &r->done);
        free(piece);
        ck_assert_uint_le(used, n);
        if (r->rc == PM_OK && !r->done)
            ck_assert_uint_eq(used, n);
        r->used += used;
        off += n;
    }
}

/* The decoded bytes, NUL-ended; the caller frees. */
static char *
chunk_text(struct chunk_run *r)
{
    size_t n = evbuffer_get_length(r->data);
    char *s = malloc(n + 1);

    ck_assert_ptr_nonnull(s);
    evbuffer_remove(r->data, s, n);
    s[n] = '\0';
    evbuffer_free(r->data);
    r->data = NULL;
    return s;
}

/* s must decode to want, whole and split at every piece size. */
static void
expect_chunked(const char *s, size_t len, const char *want)
{
    for (size_t step = 1; step <= len; step++) {
        struct chunk_run r;
        char *got;

        chunk_feed(s, len, step, false, &r);
        ck_assert_msg(r.rc == PM_OK && r.done && r.used == len,
                      "\"%s\" by %zu: rc %d done %d used %zu", show(s, len),
                      step, r.rc, r.done, r.used);
        got = chunk_text(&r);
        ck_assert_str_eq(got, want);
        free(got);
        /* scanning alone ends at the same byte */
        chunk_feed(s, len, step, true, &r);
        ck_assert(r.rc == PM_OK && r.done && r.used == len);
        ck_assert_uint_eq(evbuffer_get_length(r.data), 0);
        evbuffer_free(r.data);
    }
}

static void
expect_bad_chunked(const char *s, size_t len)
{
    for (size_t step = 1; step <= len; step++) {
        struct chunk_run r;

        chunk_feed(s, len, step, false, &r);
        ck_assert_msg(r.rc == PM_EPROTO, "\"%s\" by %zu: rc %d done %d",
                      show(s, len), step, r.rc, r.done);
        evbuffer_free(r.data);
    }
}

START_TEST(chunked_whole_and_split)
{
    static const char body[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    struct pm_http_chunked ch;
    size_t used = 1;
    bool done = true;

    expect_chunked(LIT(body), "hello world");
    expect_chunked(LIT("0\r\n\r\n"), "");
    expect_chunked(LIT("a\r\n0123456789\r\nA\r\nabcdefghij\r\n"
                       "00000000000000000000000001\r\n!\r\n000\r\n\r\n"),
                   "0123456789abcdefghij!");
    /* nothing fed: nothing used, not done */
    pm_http_chunked_init(&ch);
    ck_assert_int_eq(pm_http_chunked_feed(&ch, body, 0, NULL, &used, &done),
                     PM_OK);
    ck_assert_uint_eq(used, 0);
    ck_assert(!done);
}
END_TEST

START_TEST(chunked_extensions_and_trailers)
{
    expect_chunked(LIT("5;name=value\r\nhello\r\n"
                       "6 ; a ; b=\"x y;z\"\t\r\n world\r\n"
                       "0;last\r\n\r\n"),
                   "hello world");
    expect_chunked(LIT("3\r\nabc\r\n0\r\nX-Trailer: t\r\nExpires:\r\n"
                       "Digest: sha-256=\xc3\xa9 \t \r\n\r\n"),
                   "abc");
    expect_chunked(LIT("3  \r\nabc\r\n0\t\r\n\r\n"), "abc");
}
END_TEST

/* The body ends at its final CRLF; what follows is the next message. */
START_TEST(chunked_followed_by_the_next_message)
{
    static const char wire[] = "4\r\nWiki\r\n0\r\nT: 1\r\n\r\n"
                               "HTTP/1.1 200 OK\r\n\r\n";
    size_t body_len = sizeof("4\r\nWiki\r\n0\r\nT: 1\r\n\r\n") - 1;

    for (size_t step = 1; step <= sizeof(wire) - 1; step++) {
        struct chunk_run r;
        char *got;

        chunk_feed(LIT(wire), step, false, &r);
        ck_assert_int_eq(r.rc, PM_OK);
        ck_assert(r.done);
        ck_assert_uint_eq(r.used, body_len);
        got = chunk_text(&r);
        ck_assert_str_eq(got, "Wiki");
        free(got);
    }
    /* once done, nothing more is used */
    {
        struct pm_http_chunked ch;
        size_t used;
        bool done;

        pm_http_chunked_init(&ch);
        ck_assert_int_eq(
            pm_http_chunked_feed(&ch, LIT(wire), NULL, &used, &done), PM_OK);
        ck_assert(done);
        ck_assert_uint_eq(used, body_len);
        ck_assert_int_eq(
            pm_http_chunked_feed(&ch, LIT(wire), NULL, &used, &done), PM_OK);
        ck_assert(done);
        ck_assert_uint_eq(used, 0);
    }
}
END_TEST

START_TEST(chunked_bad_syntax)
{
    static const char *const bad[] = {
        "zz\r\n",                    /* not hex */
        "\r\n",                      /* no size */
        ";x\r\n",                    /* no size */
        "-1\r\n",                    /* sign */
        "0x5\r\nhello\r\n0\r\n\r\n", /* 0x prefix */
        "5 x\r\nhello\r\n0\r\n\r\n", /* junk after the size */
        "5\nhello\r\n0\r\n\r\n",     /* bare LF */
        "5\rhello\r\n0\r\n\r\n",     /* bare CR */
        "5;a\x01\r\nhello\r\n",      /* CTL in an extension */
        "5;a\nhello\r\n",            /* LF in an extension */
        "5\r\nhelloX\r\n0\r\n\r\n",  /* data longer than its size */
        "5\r\nhello\n0\r\n\r\n",     /* LF without CR after data */
        "5\r\nhello\r0\r\n\r\n",     /* CR without LF after data */
        "5\r\nhello\rX0\r\n\r\n",    /* X for the LF after data */
        "5\r\nhelloX\n0\r\n\r\n",    /* X for the CR after data */
        "5\r\nhell\r\n0\r\n\r\n",    /* data shorter than its size */
        "0\r\n\n",                   /* bare LF ending the trailers */
        "0\r\n\rX",                  /* CR without LF */
        "0\r\n folded: x\r\n\r\n",   /* obs-fold */
        "0\r\nNoColon\r\n\r\n",      /* no colon */
        "0\r\nX : 1\r\n\r\n",        /* space before the colon */
        "0\r\n: 1\r\n\r\n",          /* empty name */
        "0\r\nX: a\x7f\r\n\r\n",     /* DEL in a value */
        "0\r\nX: 1\n\r\n",           /* bare LF after a trailer */
        "0\r\nX: 1\rY\r\n",          /* X for the LF after a trailer */
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_bad_chunked(bad[i], strlen(bad[i]));
    /* NUL in a trailer value */
    expect_bad_chunked(LIT("0\r\nX: a\0b\r\n\r\n"));
}
END_TEST

/* Once broken, the body stays broken. */
START_TEST(chunked_error_sticks)
{
    struct pm_http_chunked ch;
    size_t used;
    bool done;

    pm_http_chunked_init(&ch);
    ck_assert_int_eq(pm_http_chunked_feed(&ch, LIT("g"), NULL, &used, &done),
                     PM_EPROTO);
    ck_assert(!done);
    ck_assert_int_eq(
        pm_http_chunked_feed(&ch, LIT("0\r\n\r\n"), NULL, &used, &done),
        PM_EPROTO);
    ck_assert(!done);
}
END_TEST

START_TEST(chunked_size_overflow)
{
    struct chunk_run r;

    /* 2^62 - 1 is a size (its data is not there yet) */
    chunk_feed(LIT("3fffffffffffffff\r\n"), 1, false, &r);
    ck_assert_int_eq(r.rc, PM_OK);
    ck_assert(!r.done);
    ck_assert_uint_eq(r.used, 18);
    evbuffer_free(r.data);
    chunk_feed(LIT("3FFFFFFFFFFFFFFF;x\r\nab"), 4, false, &r);
    ck_assert_int_eq(r.rc, PM_OK);
    ck_assert_uint_eq(evbuffer_get_length(r.data), 2);
    evbuffer_free(r.data);
    expect_bad_chunked(LIT("4000000000000000\r\n"));
    expect_bad_chunked(LIT("10000000000000000\r\n"));
    expect_bad_chunked(LIT("ffffffffffffffffffffffff\r\n"));
    /* leading zeros are no overflow */
    expect_chunked(LIT("00000000000000000000000000000000000003\r\nabc\r\n"
                       "0\r\n\r\n"),
                   "abc");
}
END_TEST

/* A chunk-size line of n bytes, CRLF included: "1;xxx...\r\n". */
static char *
size_line(size_t n, size_t *len)
{
    static const char rest[] = "a\r\n0\r\n\r\n";
    char *s = malloc(n + sizeof(rest));

    ck_assert_ptr_nonnull(s);
    memcpy(s, "1;", 2);
    memset(s + 2, 'x', n - 4);
    memcpy(s + n - 2, "\r\n", 2);
    memcpy(s + n, rest, sizeof(rest));
    *len = n + sizeof(rest) - 1;
    return s;
}

START_TEST(chunked_line_limits)
{
    struct chunk_run r;
    size_t len;
    char *s = size_line(PM_HTTP_CHUNK_LINE_MAX, &len);

    chunk_feed(s, len, len, false, &r);
    ck_assert_int_eq(r.rc, PM_OK);
    ck_assert(r.done);
    evbuffer_free(r.data);
    free(s);
    s = size_line(PM_HTTP_CHUNK_LINE_MAX + 1, &len);
    chunk_feed(s, len, len, false, &r);
    ck_assert_int_eq(r.rc, PM_EPROTO);
    evbuffer_free(r.data);
    free(s);
    /* a size line without its end is refused once over the limit */
    s = size_line(PM_HTTP_CHUNK_LINE_MAX + 100, &len);
    chunk_feed(s, PM_HTTP_CHUNK_LINE_MAX, 7, false, &r);
    ck_assert_int_eq(r.rc, PM_OK);
    evbuffer_free(r.data);
    chunk_feed(s, PM_HTTP_CHUNK_LINE_MAX + 1, 7, false, &r);
    ck_assert_int_eq(r.rc, PM_EPROTO);
    evbuffer_free(r.data);
    free(s);
}
END_TEST

/* Trailer lines of n bytes each (CRLF included) until total bytes. */
static char *
trailers(size_t line, size_t total, size_t *len)
{
    char *s = malloc(total + 16);
    size_t o = 0;

    ck_assert_ptr_nonnull(s);
    memcpy(s, "0\r\n", 3);
    o = 3;
    while (total - (o - 3) > 2) {
        size_t n = total - (o - 3) - 2 < line ? total - (o - 3) - 2 : line;

        ck_assert_uint_ge(n, 4);
        memcpy(s + o, "X:", 2);
        memset(s + o + 2, 'v', n - 4);
        memcpy(s + o + n - 2, "\r\n", 2);
        o += n;
    }
    memcpy(s + o, "\r\n", 2);
    *len = o + 2;
    return s;
}

START_TEST(chunked_trailer_limits)
{
    struct chunk_run r;
    size_t len;
    char *s;

    /* one line at the limit, then one over it */
    s = trailers(PM_HTTP_CHUNK_LINE_MAX, PM_HTTP_CHUNK_LINE_MAX + 2, &len);
    chunk_feed(s, len, 100, false, &r);
    ck_assert_int_eq(r.rc, PM_OK);
    ck_assert(r.done);
    ck_assert_uint_eq(r.used, len);
    evbuffer_free(r.data);
    free(s);
    s = trailers(PM_HTTP_CHUNK_LINE_MAX + 1, PM_HTTP_CHUNK_LINE_MAX + 3, &len);
    chunk_feed(s, len, 100, false, &r);
    ck_assert_int_eq(r.rc, PM_EPROTO);
    evbuffer_free(r.data);
    free(s);
    /* the whole section at its limit, then one byte over */
    s = trailers(1000, PM_HTTP_TRAILER_MAX, &len);
    chunk_feed(s, len, 333, false, &r);
    ck_assert_int_eq(r.rc, PM_OK);
    ck_assert(r.done);
    evbuffer_free(r.data);
    free(s);
    s = trailers(1000, PM_HTTP_TRAILER_MAX + 1, &len);
    chunk_feed(s, len, 333, false, &r);
    ck_assert_int_eq(r.rc, PM_EPROTO);
    evbuffer_free(r.data);
    free(s);
}
END_TEST

/* Chunk a payload of n bytes into chunks of 1, 2, ... bytes (cycling up
 * to 997), and decode it back with several piece sizes. */
START_TEST(chunked_decodes_the_payload)
{
    size_t n = 200000, cap = n * 2 + 64, o = 0, at = 0, size = 1;
    char *payload = malloc(n), *wire = malloc(cap);
    static const size_t steps[] = {1, 7, 4096, 65536, SIZE_MAX};

    ck_assert_ptr_nonnull(payload);
    ck_assert_ptr_nonnull(wire);
    for (size_t i = 0; i < n; i++)
        payload[i] = (char)(i * 131 + (i >> 8));
    while (at < n) {
        size_t c = n - at < size ? n - at : size;

        o += (size_t)snprintf(wire + o, cap - o, "%zx\r\n", c);
        memcpy(wire + o, payload + at, c);
        o += c;
        memcpy(wire + o, "\r\n", 2);
        o += 2;
        at += c;
        size = size % 997 + 1;
    }
    o += (size_t)snprintf(wire + o, cap - o, "0\r\n\r\n");
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct chunk_run r;
        unsigned char *got;

        chunk_feed(wire, o, steps[i], false, &r);
        ck_assert_int_eq(r.rc, PM_OK);
        ck_assert(r.done);
        ck_assert_uint_eq(r.used, o);
        ck_assert_uint_eq(evbuffer_get_length(r.data), n);
        got = evbuffer_pullup(r.data, -1);
        ck_assert(memcmp(got, payload, n) == 0);
        evbuffer_free(r.data);
    }
    free(payload);
    free(wire);
}
END_TEST

static Suite *
http_suite(void)
{
    Suite *s = suite_create("pm_http");
    TCase *tc;

    tc = tcase_create("parse");
    tcase_add_test(tc, simple_get);
    tcase_add_test(tc, post_with_body_after_head);
    tcase_add_test(tc, empty_query);
    tcase_add_test(tc, header_value_ows_trimmed);
    tcase_add_test(tc, incomplete_head_eagain);
    tcase_add_test(tc, same_content_length_twice);
    tcase_add_test(tc, content_length_values);
    tcase_add_test(tc, chunked);
    tcase_add_test(tc, keep_alive_rules);
    tcase_add_test(tc, valid_edge_requests);
    tcase_add_test(tc, upgrade_detection);
    tcase_add_test(tc, split_at_every_offset);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, head_over_limit_without_end);
    tcase_add_test(tc, complete_head_over_limit);
    tcase_add_test(tc, request_line_too_long);
    tcase_add_test(tc, max_headers);
    suite_add_tcase(s, tc);

    tc = tcase_create("rejected");
    tcase_add_loop_test(tc, rejected_heads, 0,
                        (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    suite_add_tcase(s, tc);

    tc = tcase_create("response");
    tcase_add_test(tc, response_with_content_length);
    tcase_add_test(tc, response_transfer_codings);
    tcase_add_test(tc, response_keep_alive_rules);
    tcase_add_test(tc, response_bodyless);
    tcase_add_test(tc, response_reason_phrase);
    tcase_add_test(tc, response_incomplete_eagain);
    tcase_add_test(tc, response_over_limit);
    tcase_add_test(tc, response_max_headers);
    tcase_add_test(tc, response_bad_byte_before_the_end);
    tcase_add_loop_test(
        tc, rejected_responses, 0,
        (int)(sizeof(bad_responses) / sizeof(bad_responses[0])));
    suite_add_tcase(s, tc);

    tc = tcase_create("chunked");
    tcase_add_test(tc, chunked_whole_and_split);
    tcase_add_test(tc, chunked_extensions_and_trailers);
    tcase_add_test(tc, chunked_followed_by_the_next_message);
    tcase_add_test(tc, chunked_bad_syntax);
    tcase_add_test(tc, chunked_error_sticks);
    tcase_add_test(tc, chunked_size_overflow);
    tcase_add_test(tc, chunked_line_limits);
    tcase_add_test(tc, chunked_trailer_limits);
    tcase_add_test(tc, chunked_decodes_the_payload);
    suite_add_tcase(s, tc);

    tc = tcase_create("helpers");
    tcase_add_test(tc, header_get_case_insensitive);
    tcase_add_test(tc, header_has_token);
    tcase_add_test(tc, query_param_decoding);
    tcase_add_test(tc, query_param_limits);
    tcase_add_test(tc, reason_phrases);
    tcase_add_test(tc, query_param_zero_outlen);
    tcase_add_test(tc, write_response);
    tcase_add_test(tc, write_response_body_without_type);
    suite_add_tcase(s, tc);

    return s;
}

PM_TEST_MAIN(http_suite)
