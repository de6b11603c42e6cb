/*
 * Unit tests for pm_ws (core/pm_ws.h): the handshake accept key and key
 * validation, the incremental UTF-8 validator, the frame writers (byte
 * exact against RFC 6455 section 5.7 examples) and the incremental frame
 * parser: length forms, partial input, masking, reserved bits and opcodes,
 * control-frame rules, fragmentation and reassembly, the message size
 * limit, UTF-8 of text across fragments, and close-frame parsing.
 * Frames are built either with pm_ws_write_frame or by hand (raw_frame)
 * when a test needs FIN clear or bad header bits.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "pm_test.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pm_util.h"
#include "pm_ws.h"

/* The masking key of the RFC 6455 section 5.7 examples. */
static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

#define BIG_LIMIT ((uint64_t)1 << 24)

/*
 * Append one frame with first byte b0 (FIN, RSV, opcode) and the minimal
 * length form; masked when mask is not NULL.
 */
static void
raw_frame(struct evbuffer *out, uint8_t b0, const void *data, size_t len,
          const uint8_t *mask)
{
    uint8_t hdr[14];
    size_t n = 0;
    uint8_t mbit = mask ? 0x80 : 0x00;

    hdr[n++] = b0;
    if (len < 126) {
        hdr[n++] = mbit | (uint8_t)len;
    } else if (len <= 0xFFFF) {
        hdr[n++] = mbit | 126;
        hdr[n++] = (uint8_t)(len >> 8);
        hdr[n++] = (uint8_t)len;
    } else {
        hdr[n++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            hdr[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(hdr + n, mask, 4);
        n += 4;
    }
    evbuffer_add(out, hdr, n);
    if (len == 0)
        return;
    uint8_t *body = malloc(len);
    ck_assert_ptr_nonnull(body);
    memcpy(body, data, len);
    if (mask) {
        for (size_t i = 0; i < len; i++)
            body[i] ^= mask[i % 4];
    }
    evbuffer_add(out, body, len);
    free(body);
}

/* Copy the whole buffer out for byte comparisons. */
static size_t
drain_all(struct evbuffer *b, uint8_t *out, size_t cap)
{
    size_t n = evbuffer_get_length(b);
    ck_assert_uint_le(n, cap);
    evbuffer_remove(b, out, n);
    return n;
}

/* A close payload: big-endian code then reason. */
static size_t
close_payload(uint8_t *out, uint16_t code, const char *reason, size_t rlen)
{
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (rlen)
        memcpy(out + 2, reason, rlen);
    return 2 + rlen;
}

/* Fill a payload with a recognisable pattern. */
static uint8_t *
pattern(size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 7 + (i >> 8));
    return p;
}

/* Parse a buffer holding exactly one frame; expect an error code. */
static void
expect_proto(struct evbuffer *in, uint64_t max, bool masked, uint16_t want)
{
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, max, masked);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, want);
    pm_ws_parser_close(&p);
}

/* ---- handshake -------------------------------------------------------- */

START_TEST(accept_key_rfc_example)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

    memset(out, 'x', sizeof(out));
    pm_ws_accept_key(key, strlen(key), out);
    /* RFC 6455 section 1.3 */
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(accept_key_second_vector)
{
    char out[29];
    const char *key = "x3JJHMbDL1EzLkh9GBhXDw==";

    pm_ws_accept_key(key, strlen(key), out);
    ck_assert_str_eq(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}
END_TEST

START_TEST(accept_key_uses_key_len)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==trailing";

    pm_ws_accept_key(key, 24, out);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(key_valid_accepts_16_bytes)
{
    const char *good[] = {
        "dGhlIHNhbXBsZSBub25jZQ==", "x3JJHMbDL1EzLkh9GBhXDw==",
        "AAAAAAAAAAAAAAAAAAAAAA==", "/+/+/+/+/+/+/+/+/+/+/w=="};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(pm_ws_key_valid(good[i], strlen(good[i])), "rejected %s",
                      good[i]);
}
END_TEST

START_TEST(key_valid_rejects_others)
{
    const char *bad[] = {
        "",
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ=",      /* 23 chars */
        "dGhlIHNhbXBsZSBub25jZQ",       /* no padding */
        "AAAAAAAAAAAAAAAAAAAA",         /* 15 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAA=",     /* 17 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAAA",     /* 18 bytes */
        "dGhlIHNhbXBsZSBub25jZQ==AAAA", /* 19 bytes */
        "dGhlIHNhbXBsZSBub25jZ*==",     /* bad alphabet */
        "dGhlIHNhbXBsZSBub25j ZQ=",     /* space */
        "dGhlIHNhbXBsZSBub25jZQ=A",     /* padding misplaced */
        "dGhlIHNhbXBsZSBub25jZ===",     /* too much padding */
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!pm_ws_key_valid(bad[i], strlen(bad[i])),
                      "accepted \"%s\"", bad[i]);
}
END_TEST

START_TEST(key_valid_uses_key_len)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

    ck_assert(!pm_ws_key_valid(key, 20));
    ck_assert(pm_ws_key_valid(key, 24));
}
END_TEST

/* ---- UTF-8 ------------------------------------------------------------ */

struct utf8_case {
    const char *s;
    size_t n;
};

#define U8(lit)                                                                \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }

static const struct utf8_case utf8_good[] = {
    U8(""),
    U8("hello"),
    U8("\x00"),             /* U+0000 */
    U8("\x7F"),             /* U+007F */
    U8("\xC2\x80"),         /* U+0080 */
    U8("\xDF\xBF"),         /* U+07FF */
    U8("\xE0\xA0\x80"),     /* U+0800 */
    U8("\xED\x9F\xBF"),     /* U+D7FF */
    U8("\xEE\x80\x80"),     /* U+E000 */
    U8("\xEF\xBF\xBF"),     /* U+FFFF */
    U8("\xF0\x90\x80\x80"), /* U+10000 */
    U8("\xF4\x8F\xBF\xBF"), /* U+10FFFF */
    U8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9D\x84\x9E \xCE\xBA\xE1\xBD\xB9"),
};

static const struct utf8_case utf8_bad[] = {
    U8("\x80"),                     /* lone continuation */
    U8("\xBF"),                     /* lone continuation */
    U8("a\x80z"),                   /* continuation after ASCII */
    U8("\xC0\x80"),                 /* overlong U+0000 */
    U8("\xC1\xBF"),                 /* overlong U+007F */
    U8("\xE0\x80\x80"),             /* overlong 3-byte */
    U8("\xE0\x9F\xBF"),             /* overlong U+07FF */
    U8("\xF0\x80\x80\x80"),         /* overlong 4-byte */
    U8("\xF0\x8F\xBF\xBF"),         /* overlong U+FFFF */
    U8("\xED\xA0\x80"),             /* U+D800 */
    U8("\xED\xAD\xBF"),             /* U+DB7F */
    U8("\xED\xB0\x80"),             /* U+DC00 */
    U8("\xED\xBF\xBF"),             /* U+DFFF */
    U8("\xED\xA0\x80\xED\xB0\x80"), /* surrogate pair as CESU-8 */
    U8("\xF4\x90\x80\x80"),         /* U+110000 */
    U8("\xF5\x80\x80\x80"),         /* beyond U+10FFFF */
    U8("\xF7\xBF\xBF\xBF"),         /* U+1FFFFF */
    U8("\xF8\x88\x80\x80\x80"),     /* 5-byte form */
    U8("\xFC\x84\x80\x80\x80\x80"), /* 6-byte form */
    U8("\xFE"),
    U8("\xFF"),
    U8("\xE2\x82"),             /* truncated at end */
    U8("\xF0\x9F\x98"),         /* truncated at end */
    U8("\xC3"),                 /* truncated at end */
    U8("\xE2\x82(ok"),          /* truncated, then ASCII */
    U8("\xC3\xA9\xE2\x28\xA1"), /* bad second byte */
};

START_TEST(utf8_valid_good)
{
    const struct utf8_case *c = &utf8_good[_i];

    ck_assert_msg(pm_utf8_valid((const uint8_t *)c->s, c->n),
                  "good case %d rejected", _i);
    ck_assert_uint_eq(pm_utf8_feed(PM_UTF8_ACCEPT, (const uint8_t *)c->s, c->n),
                      PM_UTF8_ACCEPT);
}
END_TEST

START_TEST(utf8_valid_bad)
{
    const struct utf8_case *c = &utf8_bad[_i];

    ck_assert_msg(!pm_utf8_valid((const uint8_t *)c->s, c->n),
                  "bad case %d accepted", _i);
    ck_assert_msg(pm_utf8_feed(PM_UTF8_ACCEPT, (const uint8_t *)c->s, c->n) !=
                      PM_UTF8_ACCEPT,
                  "bad case %d ends at a boundary", _i);
}
END_TEST

/* Valid input split at every offset ends at ACCEPT, never REJECT. */
START_TEST(utf8_split_good)
{
    const struct utf8_case *c = &utf8_good[_i];
    const uint8_t *s = (const uint8_t *)c->s;

    for (size_t cut = 0; cut <= c->n; cut++) {
        uint32_t st = pm_utf8_feed(PM_UTF8_ACCEPT, s, cut);
        ck_assert_msg(st != PM_UTF8_REJECT, "case %d rejected at %zu", _i, cut);
        st = pm_utf8_feed(st, s + cut, c->n - cut);
        ck_assert_msg(st == PM_UTF8_ACCEPT, "case %d cut %zu: state %u", _i,
                      cut, (unsigned)st);
    }
}
END_TEST

/* Invalid input split at every offset never ends at ACCEPT. */
START_TEST(utf8_split_bad)
{
    const struct utf8_case *c = &utf8_bad[_i];
    const uint8_t *s = (const uint8_t *)c->s;

    for (size_t cut = 0; cut <= c->n; cut++) {
        uint32_t st = pm_utf8_feed(PM_UTF8_ACCEPT, s, cut);
        if (st != PM_UTF8_REJECT)
            st = pm_utf8_feed(st, s + cut, c->n - cut);
        ck_assert_msg(st != PM_UTF8_ACCEPT, "case %d cut %zu accepted", _i,
                      cut);
    }
}
END_TEST

/* Every byte of a valid string fed one call at a time. */
START_TEST(utf8_byte_at_a_time)
{
    const uint8_t s[] = "a\xC3\xA9\xE2\x82\xAC\xF0\x9D\x84\x9E";
    uint32_t st = PM_UTF8_ACCEPT;

    for (size_t i = 0; i < sizeof(s) - 1; i++) {
        st = pm_utf8_feed(st, s + i, 1);
        ck_assert(st != PM_UTF8_REJECT);
    }
    ck_assert_uint_eq(st, PM_UTF8_ACCEPT);
}
END_TEST

/*
 * Prefixes that no continuation can repair are rejected as soon as the
 * offending byte is seen (what fail-fast on text fragments relies on).
 */
START_TEST(utf8_reject_early)
{
    static const struct utf8_case pre[] = {
        U8("\xC0"),     U8("\xC1"),     U8("\xF5"),     U8("\xFF"),
        U8("\x80"),     U8("\xE0\x80"), U8("\xED\xA0"), U8("\xF0\x80"),
        U8("\xF4\x90"), U8("\xE2\x28"),
    };

    for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
        ck_assert_msg(pm_utf8_feed(PM_UTF8_ACCEPT, (const uint8_t *)pre[i].s,
                                   pre[i].n) == PM_UTF8_REJECT,
                      "prefix %zu not rejected", i);
}
END_TEST

/* ---- writers ---------------------------------------------------------- */

START_TEST(write_frame_rfc_examples)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t got[16];
    size_t n;
    static const uint8_t unmasked[] = {0x81, 0x05, 0x48, 0x65,
                                       0x6c, 0x6c, 0x6f};
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};

    pm_ws_write_frame(b, PM_WS_TEXT, "Hello", 5, NULL);
    n = drain_all(b, got, sizeof(got));
    ck_assert_uint_eq(n, sizeof(unmasked));
    ck_assert_mem_eq(got, unmasked, n);

    pm_ws_write_frame(b, PM_WS_TEXT, "Hello", 5, MASK);
    n = drain_all(b, got, sizeof(got));
    ck_assert_uint_eq(n, sizeof(masked));
    ck_assert_mem_eq(got, masked, n);

    pm_ws_write_frame(b, PM_WS_PING, "Hello", 5, NULL);
    n = drain_all(b, got, sizeof(got));
    ck_assert_uint_eq(n, sizeof(ping));
    ck_assert_mem_eq(got, ping, n);
    evbuffer_free(b);
}
END_TEST

/* The writer's length forms: 7-bit, 16-bit and 64-bit. */
START_TEST(write_frame_length_forms)
{
    static const size_t lens[] = {0, 125, 126, 65535, 65536};
    struct evbuffer *b = evbuffer_new();

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t len = lens[i];
        uint8_t *data = pattern(len);
        uint8_t hdr[10];
        size_t hlen = len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;

        pm_ws_write_frame(b, PM_WS_BINARY, data, len, NULL);
        ck_assert_uint_eq(evbuffer_get_length(b), hlen + len);
        evbuffer_remove(b, hdr, hlen);
        ck_assert_uint_eq(hdr[0], 0x82);
        if (hlen == 2) {
            ck_assert_uint_eq(hdr[1], len);
        } else if (hlen == 4) {
            ck_assert_uint_eq(hdr[1], 126);
            ck_assert_uint_eq(((size_t)hdr[2] << 8) | hdr[3], len);
        } else {
            uint64_t v = 0;
            ck_assert_uint_eq(hdr[1], 127);
            for (int k = 2; k < 10; k++)
                v = (v << 8) | hdr[k];
            ck_assert_uint_eq(v, len);
        }
        if (len) {
            uint8_t *rest = malloc(len);
            evbuffer_remove(b, rest, len);
            ck_assert_mem_eq(rest, data, len);
            free(rest);
        }
        free(data);
    }
    evbuffer_free(b);
}
END_TEST

START_TEST(write_header_forms)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t got[16];
    static const uint8_t h5[] = {0x81, 0x05};
    static const uint8_t h126[] = {0x82, 0x7E, 0x00, 0x7E};
    static const uint8_t h70000[] = {0x82, 0x7F, 0,    0,    0,
                                     0,    0,    0x01, 0x11, 0x70};

    pm_ws_write_header(b, PM_WS_TEXT, 5);
    ck_assert_uint_eq(drain_all(b, got, sizeof(got)), sizeof(h5));
    ck_assert_mem_eq(got, h5, sizeof(h5));
    pm_ws_write_header(b, PM_WS_BINARY, 126);
    ck_assert_uint_eq(drain_all(b, got, sizeof(got)), sizeof(h126));
    ck_assert_mem_eq(got, h126, sizeof(h126));
    pm_ws_write_header(b, PM_WS_BINARY, 70000);
    ck_assert_uint_eq(drain_all(b, got, sizeof(got)), sizeof(h70000));
    ck_assert_mem_eq(got, h70000, sizeof(h70000));
    evbuffer_free(b);
}
END_TEST

/* ---- parser: framing -------------------------------------------------- */

START_TEST(parse_rfc_masked_hello)
{
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    evbuffer_add(in, masked, sizeof(masked));
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 5);
    ck_assert_mem_eq(ev.data, "Hello", 5);
    /* the event's bytes are released by the next call */
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    ck_assert_uint_eq(evbuffer_get_length(in), 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

static const size_t frame_lens[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};

/* Masked client frames of every length form round-trip. */
START_TEST(parse_length_forms)
{
    size_t len = frame_lens[_i];
    uint8_t *data = pattern(len);
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_write_frame(in, PM_WS_BINARY, data, len, MASK);
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, len);
    if (len)
        ck_assert_mem_eq(ev.data, data, len);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    ck_assert_uint_eq(evbuffer_get_length(in), 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
    free(data);
}
END_TEST

/*
 * A frame delivered a byte at a time (the payload of large frames in
 * 4 KiB steps): PM_EAGAIN until complete, then the whole payload.
 */
START_TEST(parse_byte_at_a_time)
{
    size_t len = frame_lens[_i];
    uint8_t *data = pattern(len);
    struct evbuffer *src = evbuffer_new();
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    size_t total, fed = 0;
    uint8_t *wire;
    int rc = PM_EAGAIN;

    /* pattern() bytes are not UTF-8; use ASCII for TEXT */
    memset(data, 'a', len);
    pm_ws_write_frame(src, PM_WS_TEXT, data, len, MASK);
    total = evbuffer_get_length(src);
    wire = malloc(total);
    evbuffer_remove(src, wire, total);

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    while (fed < total) {
        size_t step = (fed < 14 || len < 1024) ? 1 : 4096;
        if (step > total - fed)
            step = total - fed;
        evbuffer_add(in, wire + fed, step);
        fed += step;
        rc = pm_ws_parse(&p, in, &ev, &cc);
        if (fed < total)
            ck_assert_msg(rc == PM_EAGAIN, "rc %d after %zu of %zu bytes", rc,
                          fed, total);
    }
    ck_assert_int_eq(rc, PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, len);
    if (len)
        ck_assert_mem_eq(ev.data, data, len);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    ck_assert_uint_eq(evbuffer_get_length(in), 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
    evbuffer_free(src);
    free(wire);
    free(data);
}
END_TEST

START_TEST(parse_two_frames_one_buffer)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_write_frame(in, PM_WS_TEXT, "first", 5, MASK);
    pm_ws_write_frame(in, PM_WS_BINARY, "second!", 7, MASK);
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 5);
    ck_assert_mem_eq(ev.data, "first", 5);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, 7);
    ck_assert_mem_eq(ev.data, "second!", 7);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_ping_pong)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t big[125];

    memset(big, 'p', sizeof(big));
    pm_ws_write_frame(in, PM_WS_PING, "hb", 2, MASK);
    pm_ws_write_frame(in, PM_WS_PONG, "", 0, MASK);
    pm_ws_write_frame(in, PM_WS_PING, big, sizeof(big), MASK);
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_PING);
    ck_assert_uint_eq(ev.len, 2);
    ck_assert_mem_eq(ev.data, "hb", 2);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_PONG);
    ck_assert_uint_eq(ev.len, 0);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_PING);
    ck_assert_uint_eq(ev.len, 125);
    ck_assert_mem_eq(ev.data, big, 125);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_unmasked_rejected_by_server)
{
    struct evbuffer *in = evbuffer_new();

    pm_ws_write_frame(in, PM_WS_TEXT, "Hello", 5, NULL);
    expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
    evbuffer_free(in);
}
END_TEST

/* RFC 6455 5.1: a client must fail a masked frame from the server. */
START_TEST(parse_masked_rejected_by_client)
{
    struct evbuffer *in = evbuffer_new();

    pm_ws_write_frame(in, PM_WS_TEXT, "Hello", 5, MASK);
    expect_proto(in, BIG_LIMIT, false, PM_WS_PROTOCOL_ERROR);
    evbuffer_free(in);
}
END_TEST

/* Server frames (mask NULL) parse with expect_masked false. */
START_TEST(parse_server_frames_client_side)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t *data = pattern(300);

    pm_ws_write_frame(in, PM_WS_TEXT, "Hello", 5, NULL);
    pm_ws_write_frame(in, PM_WS_BINARY, data, 300, NULL);
    pm_ws_write_close(in, PM_WS_GOING_AWAY, "shutdown", NULL);
    pm_ws_parser_init(&p, BIG_LIMIT, false);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 5);
    ck_assert_mem_eq(ev.data, "Hello", 5);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, 300);
    ck_assert_mem_eq(ev.data, data, 300);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_CLOSE);
    ck_assert_uint_eq(ev.close_code, 1001);
    ck_assert_uint_eq(ev.close_reason_len, 8);
    ck_assert_mem_eq(ev.close_reason, "shutdown", 8);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
    free(data);
}
END_TEST

/* Server-written header plus payload parses on the client side. */
START_TEST(parse_write_header_then_payload)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t *data = pattern(70000);

    pm_ws_write_header(in, PM_WS_BINARY, 70000);
    evbuffer_add(in, data, 70000);
    pm_ws_parser_init(&p, BIG_LIMIT, false);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, 70000);
    ck_assert_mem_eq(ev.data, data, 70000);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
    free(data);
}
END_TEST

/* ---- parser: header violations ---------------------------------------- */

START_TEST(parse_rsv_bits_rejected)
{
    static const uint8_t rsv[] = {0x40, 0x20, 0x10, 0x70};
    struct evbuffer *in = evbuffer_new();

    for (size_t i = 0; i < sizeof(rsv); i++) {
        raw_frame(in, 0x80 | rsv[i] | PM_WS_TEXT, "hi", 2, MASK);
        expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
        evbuffer_drain(in, evbuffer_get_length(in));
        raw_frame(in, 0x80 | rsv[i] | PM_WS_PING, "hi", 2, MASK);
        expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_reserved_opcodes_rejected)
{
    static const uint8_t ops[] = {0x3, 0x4, 0x5, 0x6, 0x7,
                                  0xB, 0xC, 0xD, 0xE, 0xF};
    struct evbuffer *in = evbuffer_new();

    for (size_t i = 0; i < sizeof(ops); i++) {
        raw_frame(in, 0x80 | ops[i], "x", 1, MASK);
        expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_control_without_fin_rejected)
{
    static const uint8_t ops[] = {PM_WS_PING, PM_WS_PONG, PM_WS_CLOSE};
    struct evbuffer *in = evbuffer_new();

    for (size_t i = 0; i < sizeof(ops); i++) {
        raw_frame(in, ops[i], "", 0, MASK);
        expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_control_payload_126_rejected)
{
    static const uint8_t ops[] = {PM_WS_PING, PM_WS_PONG, PM_WS_CLOSE};
    struct evbuffer *in = evbuffer_new();
    uint8_t body[126];

    memset(body, 'a', sizeof(body));
    body[0] = 0x03; /* a valid close code 1000 for the CLOSE case */
    body[1] = 0xE8;
    for (size_t i = 0; i < sizeof(ops); i++) {
        raw_frame(in, 0x80 | ops[i], body, sizeof(body), MASK);
        expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_len64_top_bit_rejected)
{
    /* FIN|BINARY, masked, 127, length 0x8000000000000000, mask key */
    static const uint8_t hdr[] = {0x82, 0xFF, 0x80, 0,    0,    0,    0,
                                  0,    0,    0,    0x37, 0xfa, 0x21, 0x3d};
    struct evbuffer *in = evbuffer_new();

    evbuffer_add(in, hdr, sizeof(hdr));
    expect_proto(in, UINT64_MAX, true, PM_WS_PROTOCOL_ERROR);
    evbuffer_free(in);
}
END_TEST

/*
 * Oversized single frame: 1009 from the header alone, so a peer cannot
 * make the server buffer a payload it will refuse anyway.
 */
START_TEST(parse_too_big_single_frame)
{
    struct evbuffer *in = evbuffer_new();
    uint8_t *data = pattern(101);
    uint8_t hdr[8];

    raw_frame(in, 0x80 | PM_WS_BINARY, data, 100, MASK);
    {
        struct pm_ws_parser p;
        struct pm_ws_event ev;
        uint16_t cc = 0;
        pm_ws_parser_init(&p, 100, true);
        ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
        ck_assert_uint_eq(ev.len, 100);
        pm_ws_parser_close(&p);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    raw_frame(in, 0x80 | PM_WS_BINARY, data, 101, MASK);
    expect_proto(in, 100, true, PM_WS_TOO_BIG);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* header only, 16-bit length 1000, mask key: no payload sent */
    hdr[0] = 0x82;
    hdr[1] = 0x80 | 126;
    hdr[2] = 0x03;
    hdr[3] = 0xE8;
    memcpy(hdr + 4, MASK, 4);
    evbuffer_add(in, hdr, sizeof(hdr));
    expect_proto(in, 100, true, PM_WS_TOO_BIG);
    evbuffer_free(in);
    free(data);
}
END_TEST

/* ---- parser: fragmentation -------------------------------------------- */

START_TEST(parse_continuation_without_start)
{
    struct evbuffer *in = evbuffer_new();

    raw_frame(in, 0x80 | PM_WS_CONT, "x", 1, MASK);
    expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
    evbuffer_drain(in, evbuffer_get_length(in));
    raw_frame(in, PM_WS_CONT, "x", 1, MASK);
    expect_proto(in, BIG_LIMIT, true, PM_WS_PROTOCOL_ERROR);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_new_message_while_fragmented)
{
    static const uint8_t ops[] = {PM_WS_TEXT, PM_WS_BINARY};
    struct evbuffer *in = evbuffer_new();

    for (size_t i = 0; i < sizeof(ops); i++) {
        struct pm_ws_parser p;
        struct pm_ws_event ev;
        uint16_t cc = 0;

        pm_ws_parser_init(&p, BIG_LIMIT, true);
        raw_frame(in, PM_WS_TEXT, "ab", 2, MASK);
        ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
        raw_frame(in, 0x80 | ops[i], "cd", 2, MASK);
        ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
        ck_assert_uint_eq(cc, PM_WS_PROTOCOL_ERROR);
        pm_ws_parser_close(&p);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

/* Three fragments fed one by one: EAGAIN, EAGAIN, then one TEXT. */
START_TEST(parse_fragmented_text)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "Hel", 3, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, PM_WS_CONT, "lo, ", 4, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, "w\xC3\xB6rld", 6, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 13);
    ck_assert_mem_eq(ev.data, "Hello, w\xC3\xB6rld", 13);
    /* the parser is ready for a new unfragmented message */
    pm_ws_write_frame(in, PM_WS_TEXT, "next", 4, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 4);
    ck_assert_mem_eq(ev.data, "next", 4);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

/*
 * All fragments already buffered: PM_EAGAIN means "more bytes needed",
 * so a single call must complete the message rather than stall.
 */
START_TEST(parse_fragments_in_one_buffer)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_BINARY, "\xff\x00", 2, MASK);
    raw_frame(in, PM_WS_CONT, "", 0, MASK);
    raw_frame(in, 0x80 | PM_WS_CONT, "\x01", 1, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, 3);
    ck_assert_mem_eq(ev.data, "\xff\x00\x01", 3);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    ck_assert_uint_eq(evbuffer_get_length(in), 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_ping_between_fragments)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "Hel", 3, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    pm_ws_write_frame(in, PM_WS_PING, "p1", 2, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_PING);
    ck_assert_uint_eq(ev.len, 2);
    ck_assert_mem_eq(ev.data, "p1", 2);
    raw_frame(in, 0x80 | PM_WS_CONT, "lo", 2, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 5);
    ck_assert_mem_eq(ev.data, "Hello", 5);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_too_big_across_fragments)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t *data = pattern(60);

    /* 50 + 50 fits a 100-byte limit exactly */
    pm_ws_parser_init(&p, 100, true);
    raw_frame(in, PM_WS_BINARY, data, 50, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, data, 50, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_uint_eq(ev.len, 100);
    pm_ws_parser_close(&p);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* 60 + 60 does not */
    pm_ws_parser_init(&p, 100, true);
    raw_frame(in, PM_WS_BINARY, data, 60, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, data, 60, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_TOO_BIG);
    pm_ws_parser_close(&p);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* and 60 + 60 is refused before the final fragment arrives */
    pm_ws_parser_init(&p, 100, true);
    memset(data, 'a', 60);
    raw_frame(in, PM_WS_TEXT, data, 60, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, PM_WS_CONT, data, 60, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_TOO_BIG);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
    free(data);
}
END_TEST

START_TEST(parse_empty_fragments)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "", 0, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, "", 0, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
    ck_assert_uint_eq(ev.len, 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

/* ---- parser: UTF-8 of text -------------------------------------------- */

START_TEST(parse_text_invalid_utf8)
{
    static const struct utf8_case bad[] = {U8("\xC0\x80"), U8("\xED\xA0\x80"),
                                           U8("\xF4\x90\x80\x80"),
                                           U8("ok\xE2\x82"), U8("\xFF")};
    struct evbuffer *in = evbuffer_new();

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pm_ws_write_frame(in, PM_WS_TEXT, bad[i].s, bad[i].n, MASK);
        expect_proto(in, BIG_LIMIT, true, PM_WS_INVALID_DATA);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_binary_invalid_utf8_ok)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    pm_ws_write_frame(in, PM_WS_BINARY, "\xC0\x80\xFF", 3, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, 3);
    /* fragmented binary with a sequence cut between fragments */
    raw_frame(in, PM_WS_BINARY, "\xE2", 1, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, "(", 1, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_BINARY);
    ck_assert_uint_eq(ev.len, 2);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

/* A valid multibyte character split across fragments is fine. */
START_TEST(parse_text_utf8_split_valid)
{
    static const char euro[] = "\xE2\x82\xAC";
    struct evbuffer *in = evbuffer_new();

    for (size_t cut = 1; cut < 3; cut++) {
        struct pm_ws_parser p;
        struct pm_ws_event ev;
        uint16_t cc = 0;

        pm_ws_parser_init(&p, BIG_LIMIT, true);
        raw_frame(in, PM_WS_TEXT, euro, cut, MASK);
        ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
        raw_frame(in, 0x80 | PM_WS_CONT, euro + cut, 3 - cut, MASK);
        ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
        ck_assert_int_eq(ev.opcode, PM_WS_TEXT);
        ck_assert_uint_eq(ev.len, 3);
        ck_assert_mem_eq(ev.data, euro, 3);
        pm_ws_parser_close(&p);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_text_utf8_split_invalid)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    /* E2 82 then '(' : the continuation is missing */
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "a\xE2\x82", 3, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, "(", 1, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_INVALID_DATA);
    pm_ws_parser_close(&p);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* a sequence still open when the final fragment ends */
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "a", 1, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, 0x80 | PM_WS_CONT, "\xF0\x9F\x98", 3, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_INVALID_DATA);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

/* Fail fast: an invalid first fragment is rejected before the final. */
START_TEST(parse_text_utf8_fail_fast)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "ok\xC0\x80", 4, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_INVALID_DATA);
    pm_ws_parser_close(&p);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* a surrogate split over two non-final fragments */
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    raw_frame(in, PM_WS_TEXT, "\xED", 1, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EAGAIN);
    raw_frame(in, PM_WS_CONT, "\xA0\x80", 2, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_INVALID_DATA);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

/* ---- parser: close frames --------------------------------------------- */

/* Parse one masked close frame with the given payload. */
static int
parse_close(const uint8_t *payload, size_t len, struct pm_ws_event *ev,
            uint16_t *cc, struct pm_ws_parser *p, struct evbuffer *in)
{
    pm_ws_write_frame(in, PM_WS_CLOSE, payload, len, MASK);
    return pm_ws_parse(p, in, ev, cc);
}

START_TEST(parse_close_no_payload)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(parse_close(NULL, 0, &ev, &cc, &p, in), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_CLOSE);
    ck_assert_uint_eq(ev.close_code, PM_WS_NO_STATUS);
    ck_assert_uint_eq(ev.close_reason_len, 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_close_one_byte)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(parse_close((const uint8_t *)"\x03", 1, &ev, &cc, &p, in),
                     PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_PROTOCOL_ERROR);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_close_code_and_reason)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t pl[125];
    size_t n;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    n = close_payload(pl, 1000, "bye", 3);
    ck_assert_int_eq(parse_close(pl, n, &ev, &cc, &p, in), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_CLOSE);
    ck_assert_uint_eq(ev.close_code, 1000);
    ck_assert_uint_eq(ev.close_reason_len, 3);
    ck_assert_mem_eq(ev.close_reason, "bye", 3);

    /* code only */
    n = close_payload(pl, 1001, NULL, 0);
    ck_assert_int_eq(parse_close(pl, n, &ev, &cc, &p, in), PM_OK);
    ck_assert_uint_eq(ev.close_code, 1001);
    ck_assert_uint_eq(ev.close_reason_len, 0);

    /* the longest reason a control frame allows, with UTF-8 */
    memset(pl, 'r', sizeof(pl));
    close_payload(pl, 4000, "\xC3\xA9t\xC3\xA9", 5);
    ck_assert_int_eq(parse_close(pl, 125, &ev, &cc, &p, in), PM_OK);
    ck_assert_uint_eq(ev.close_code, 4000);
    ck_assert_uint_eq(ev.close_reason_len, 123);
    ck_assert_mem_eq(ev.close_reason, "\xC3\xA9t\xC3\xA9rrr", 8);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

static const uint16_t close_bad[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                     1016, 1100, 2000, 2999, 5000, 6000, 65535};
static const uint16_t close_good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                      1010, 1011, 3000, 3999, 4000, 4999};

START_TEST(parse_close_invalid_codes)
{
    uint16_t code = close_bad[_i];
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t pl[8];
    size_t n = close_payload(pl, code, "x", 1);

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_msg(parse_close(pl, n, &ev, &cc, &p, in) == PM_EPROTO,
                  "close code %u accepted", code);
    ck_assert_uint_eq(cc, PM_WS_PROTOCOL_ERROR);
    ck_assert(!pm_ws_close_code_valid(code));
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_close_valid_codes)
{
    uint16_t code = close_good[_i];
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t pl[8];
    size_t n = close_payload(pl, code, NULL, 0);

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_msg(parse_close(pl, n, &ev, &cc, &p, in) == PM_OK,
                  "close code %u rejected", code);
    ck_assert_uint_eq(ev.close_code, code);
    ck_assert(pm_ws_close_code_valid(code));
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(parse_close_reason_invalid_utf8)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    uint8_t pl[16];
    size_t n = close_payload(pl, 1000, "bad\xC0\x80", 5);

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(parse_close(pl, n, &ev, &cc, &p, in), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_INVALID_DATA);
    pm_ws_parser_close(&p);
    evbuffer_drain(in, evbuffer_get_length(in));

    n = close_payload(pl, 1000, "\xE2\x82", 2); /* truncated */
    pm_ws_parser_init(&p, BIG_LIMIT, true);
    ck_assert_int_eq(parse_close(pl, n, &ev, &cc, &p, in), PM_EPROTO);
    ck_assert_uint_eq(cc, PM_WS_INVALID_DATA);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

START_TEST(write_close_round_trip)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    pm_ws_write_close(in, PM_WS_NORMAL, "bye", MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_int_eq(ev.opcode, PM_WS_CLOSE);
    ck_assert_uint_eq(ev.close_code, 1000);
    ck_assert_uint_eq(ev.close_reason_len, 3);
    ck_assert_mem_eq(ev.close_reason, "bye", 3);

    pm_ws_write_close(in, PM_WS_TOO_BIG, NULL, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_uint_eq(ev.close_code, 1009);
    ck_assert_uint_eq(ev.close_reason_len, 0);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

/*
 * A reason too long for a control frame is truncated so the frame stays
 * valid: at most 123 bytes, and not cut inside a UTF-8 sequence.
 */
START_TEST(write_close_truncates_reason)
{
    struct evbuffer *in = evbuffer_new();
    struct pm_ws_parser p;
    struct pm_ws_event ev;
    uint16_t cc = 0;
    char ascii[301];
    char accents[401];

    memset(ascii, 'z', 300);
    ascii[300] = '\0';
    for (int i = 0; i < 200; i++) {
        accents[2 * i] = '\xC3';
        accents[2 * i + 1] = '\xA9';
    }
    accents[400] = '\0';

    pm_ws_parser_init(&p, BIG_LIMIT, true);
    pm_ws_write_close(in, PM_WS_GOING_AWAY, ascii, MASK);
    ck_assert_int_eq(pm_ws_parse(&p, in, &ev, &cc), PM_OK);
    ck_assert_uint_eq(ev.close_code, 1001);
    ck_assert_uint_eq(ev.close_reason_len, 123);

    pm_ws_write_close(in, PM_WS_GOING_AWAY, accents, MASK);
    ck_assert_msg(pm_ws_parse(&p, in, &ev, &cc) == PM_OK,
                  "truncated reason not valid: close code %u", cc);
    ck_assert_uint_eq(ev.close_code, 1001);
    ck_assert_uint_le(ev.close_reason_len, 123);
    ck_assert_uint_ge(ev.close_reason_len, 120);
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}
END_TEST

static Suite *
ws_suite(void)
{
    Suite *s = suite_create("pm_ws");
    TCase *tc;
    int ngood = (int)(sizeof(utf8_good) / sizeof(utf8_good[0]));
    int nbad = (int)(sizeof(utf8_bad) / sizeof(utf8_bad[0]));
    int nlens = (int)(sizeof(frame_lens) / sizeof(frame_lens[0]));

    tc = tcase_create("handshake");
    tcase_add_test(tc, accept_key_rfc_example);
    tcase_add_test(tc, accept_key_second_vector);
    tcase_add_test(tc, accept_key_uses_key_len);
    tcase_add_test(tc, key_valid_accepts_16_bytes);
    tcase_add_test(tc, key_valid_rejects_others);
    tcase_add_test(tc, key_valid_uses_key_len);
    suite_add_tcase(s, tc);

    tc = tcase_create("utf8");
    tcase_add_loop_test(tc, utf8_valid_good, 0, ngood);
    tcase_add_loop_test(tc, utf8_valid_bad, 0, nbad);
    tcase_add_loop_test(tc, utf8_split_good, 0, ngood);
    tcase_add_loop_test(tc, utf8_split_bad, 0, nbad);
    tcase_add_test(tc, utf8_byte_at_a_time);
    tcase_add_test(tc, utf8_reject_early);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_test(tc, write_frame_rfc_examples);
    tcase_add_test(tc, write_frame_length_forms);
    tcase_add_test(tc, write_header_forms);
    suite_add_tcase(s, tc);

    tc = tcase_create("framing");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, parse_rfc_masked_hello);
    tcase_add_loop_test(tc, parse_length_forms, 0, nlens);
    tcase_add_loop_test(tc, parse_byte_at_a_time, 0, nlens);
    tcase_add_test(tc, parse_two_frames_one_buffer);
    tcase_add_test(tc, parse_ping_pong);
    tcase_add_test(tc, parse_unmasked_rejected_by_server);
    tcase_add_test(tc, parse_masked_rejected_by_client);
    tcase_add_test(tc, parse_server_frames_client_side);
    tcase_add_test(tc, parse_write_header_then_payload);
    tcase_add_test(tc, parse_rsv_bits_rejected);
    tcase_add_test(tc, parse_reserved_opcodes_rejected);
    tcase_add_test(tc, parse_control_without_fin_rejected);
    tcase_add_test(tc, parse_control_payload_126_rejected);
    tcase_add_test(tc, parse_len64_top_bit_rejected);
    tcase_add_test(tc, parse_too_big_single_frame);
    suite_add_tcase(s, tc);

    tc = tcase_create("fragments");
    tcase_add_test(tc, parse_continuation_without_start);
    tcase_add_test(tc, parse_new_message_while_fragmented);
    tcase_add_test(tc, parse_fragmented_text);
    tcase_add_test(tc, parse_fragments_in_one_buffer);
    tcase_add_test(tc, parse_ping_between_fragments);
    tcase_add_test(tc, parse_too_big_across_fragments);
    tcase_add_test(tc, parse_empty_fragments);
    suite_add_tcase(s, tc);

    tc = tcase_create("text");
    tcase_add_test(tc, parse_text_invalid_utf8);
    tcase_add_test(tc, parse_binary_invalid_utf8_ok);
    tcase_add_test(tc, parse_text_utf8_split_valid);
    tcase_add_test(tc, parse_text_utf8_split_invalid);
    tcase_add_test(tc, parse_text_utf8_fail_fast);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_add_test(tc, parse_close_no_payload);
    tcase_add_test(tc, parse_close_one_byte);
    tcase_add_test(tc, parse_close_code_and_reason);
    tcase_add_loop_test(tc, parse_close_invalid_codes, 0,
                        (int)(sizeof(close_bad) / sizeof(close_bad[0])));
    tcase_add_loop_test(tc, parse_close_valid_codes, 0,
                        (int)(sizeof(close_good) / sizeof(close_good[0])));
    tcase_add_test(tc, parse_close_reason_invalid_utf8);
    tcase_add_test(tc, write_close_round_trip);
    tcase_add_test(tc, write_close_truncates_reason);
    suite_add_tcase(s, tc);

    return s;
}

PM_TEST_MAIN(ws_suite)
