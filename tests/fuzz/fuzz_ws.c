/*
 * fuzz_ws: drives core/pm_ws.c's incremental frame parser (pm_ws_parse:
 * masking, reserved bits, opcodes, control-frame rules, fragment
 * reassembly, UTF-8 of text across fragments, the message limit) and the
 * UTF-8 validator.
 *
 * Input: byte 0 picks server/client side, the message limit and how the
 * rest is split; the rest is the byte stream of frames, fed once whole
 * and once in pieces of varying size.
 *
 * Asserts: an event is TEXT, BINARY, PING, PONG or CLOSE; a message is
 * within the limit, a control frame within 125 bytes; TEXT is valid
 * UTF-8 (also by pm_utf8_feed byte by byte); a CLOSE carries 1005 with
 * no payload or a valid code and a UTF-8 reason inside the payload; a
 * refusal's close code is 1002, 1007 or 1009; the whole and the split
 * feed produce the same events and the same outcome; a message written
 * back with pm_ws_write_frame (masked) parses to the same payload.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include <event2/buffer.h>

#include "fuzz.h"
#include "pm_util.h"
#include "pm_ws.h"

#define MAX_EVENTS 256

struct outcome {
    uint64_t hash; /* FNV-1a over every event */
    unsigned events;
    int last; /* PM_EAGAIN or PM_EPROTO */
    uint16_t close_code;
};

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void
roundtrip(const struct pm_ws_event *ev)
{
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    struct pm_ws_parser p;
    struct evbuffer *b = evbuffer_new();
    struct pm_ws_event back;
    uint16_t code = 0;

    pm_ws_parser_init(&p, ev->len + 1, true);
    pm_ws_write_frame(b, ev->opcode, ev->data, ev->len, mask);
    FUZZ_CHECK(pm_ws_parse(&p, b, &back, &code) == PM_OK);
    FUZZ_CHECK(back.opcode == ev->opcode && back.len == ev->len);
    FUZZ_CHECK(ev->len == 0 || memcmp(back.data, ev->data, ev->len) == 0);
    pm_ws_parser_close(&p);
    evbuffer_free(b);
}

static void
check_event(const struct pm_ws_event *ev, uint64_t limit)
{
    FUZZ_CHECK(ev->opcode == PM_WS_TEXT || ev->opcode == PM_WS_BINARY ||
               ev->opcode == PM_WS_PING || ev->opcode == PM_WS_PONG ||
               ev->opcode == PM_WS_CLOSE);
    FUZZ_CHECK(ev->data != NULL);
    if (ev->opcode & 0x8)
        FUZZ_CHECK(ev->len <= 125);
    else
        FUZZ_CHECK(ev->len <= limit);
    if (ev->opcode == PM_WS_TEXT) {
        uint32_t st = PM_UTF8_ACCEPT;
        size_t i;

        FUZZ_CHECK(pm_utf8_valid(ev->data, ev->len));
        for (i = 0; i < ev->len; i++)
            st = pm_utf8_feed(st, ev->data + i, 1);
        FUZZ_CHECK(st == PM_UTF8_ACCEPT);
    }
    if (ev->opcode == PM_WS_CLOSE) {
        if (ev->len == 0) {
            FUZZ_CHECK(ev->close_code == PM_WS_NO_STATUS);
        } else {
            FUZZ_CHECK(ev->len >= 2);
            FUZZ_CHECK(pm_ws_close_code_valid(ev->close_code));
            FUZZ_CHECK(ev->close_reason == (const char *)ev->data + 2);
            FUZZ_CHECK(ev->close_reason_len == ev->len - 2);
            FUZZ_CHECK(pm_utf8_valid((const uint8_t *)ev->close_reason,
                                     ev->close_reason_len));
        }
    }
    if (ev->opcode == PM_WS_TEXT || ev->opcode == PM_WS_BINARY)
        roundtrip(ev);
}

/* Parse everything available; false once refused. */
static bool
drain(struct pm_ws_parser *p, struct evbuffer *in, struct outcome *o,
      uint64_t limit)
{
    struct pm_ws_event ev;
    uint16_t code;
    int rv;

    while (o->events < MAX_EVENTS) {
        memset(&ev, 0, sizeof ev);
        code = 0;
        rv = pm_ws_parse(p, in, &ev, &code);
        if (rv == PM_EAGAIN) {
            o->last = rv;
            return true;
        }
        if (rv == PM_EPROTO) {
            FUZZ_CHECK(code == PM_WS_PROTOCOL_ERROR ||
                       code == PM_WS_INVALID_DATA || code == PM_WS_TOO_BIG);
            o->last = rv;
            o->close_code = code;
            return false;
        }
        FUZZ_CHECK(rv == PM_OK);
        check_event(&ev, limit);
        o->events++;
        o->hash = fnv(o->hash, &ev.opcode, sizeof ev.opcode);
        o->hash = fnv(o->hash, &ev.len, sizeof ev.len);
        o->hash = fnv(o->hash, ev.data, ev.len);
    }
    o->last = PM_EAGAIN;
    return false;
}

static void
run(const uint8_t *buf, size_t len, bool server, uint64_t limit, size_t step,
    struct outcome *o)
{
    struct pm_ws_parser p;
    struct evbuffer *in = evbuffer_new();
    size_t off = 0;

    memset(o, 0, sizeof *o);
    o->hash = 14695981039346656037ull;
    pm_ws_parser_init(&p, limit, server);
    if (step == 0) {
        evbuffer_add(in, buf, len);
        (void)drain(&p, in, o, limit);
    } else {
        o->last = PM_EAGAIN;
        while (off < len) {
            size_t n = len - off < step ? len - off : step;

            evbuffer_add(in, buf + off, n);
            off += n;
            if (!drain(&p, in, o, limit))
                break;
            step = step * 5 % 13 + 1;
        }
    }
    pm_ws_parser_close(&p);
    evbuffer_free(in);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t limits[] = {1 << 20, 16, 200, 70000};
    struct outcome whole, split;
    bool server;
    uint64_t limit;

    if (size < 1)
        return 0;
    server = (data[0] & 0x80) == 0;
    limit = limits[data[0] & 3];
    (void)pm_utf8_valid(data + 1, size - 1);
    run(data + 1, size - 1, server, limit, 0, &whole);
    run(data + 1, size - 1, server, limit, (size_t)((data[0] >> 2) & 7) + 1,
        &split);
    if (whole.events < MAX_EVENTS && split.events < MAX_EVENTS) {
        FUZZ_CHECK(whole.events == split.events);
        FUZZ_CHECK(whole.hash == split.hash);
        FUZZ_CHECK(whole.last == split.last);
        FUZZ_CHECK(whole.close_code == split.close_code);
    }
    return 0;
}
