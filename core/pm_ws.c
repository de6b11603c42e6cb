/*
 * pm_ws: RFC 6455 framing. The parser reads frame headers with
 * evbuffer_copyout, refuses a frame as soon as its header breaks a rule
 * (before its payload arrives), and hands out unfragmented messages
 * without copying: the payload is made contiguous and unmasked in place
 * inside the input evbuffer and drained on the next call. Fragmented
 * messages are reassembled into p->frag with UTF-8 checked per fragment,
 * so an invalid text fails fast. Pure: no sockets, no logging.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "pm_util.h"
#include "pm_ws.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void
pm_ws_accept_key(const char *key, size_t key_len, char out[29])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    PM_ASSERT(ctx != NULL);
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    EVP_DigestUpdate(ctx, key, key_len);
    EVP_DigestUpdate(ctx, ws_guid, sizeof ws_guid - 1);
    EVP_DigestFinal_ex(ctx, digest, &dlen);
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, digest, (int)dlen);
}

bool
pm_ws_key_valid(const char *key, size_t key_len)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    /* base64 of 16 bytes: 22 significant characters, then "==". */
    if (key_len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (i = 0; i < 22; i++)
        if (key[i] == '\0' || strchr(b64, key[i]) == NULL)
            return false;
    /* The last significant character carries 2 bits: low 4 bits zero. */
    return (strchr(b64, key[21]) - b64) % 16 == 0;
}

/*
 * UTF-8 validation state: 0 at a character boundary, otherwise
 * (continuation bytes still needed << 4) | allowed range of the next one.
 */
enum utf8_range {
    R_ANY = 0, /* 80..BF */
    R_E0,      /* A0..BF: no overlong 3-byte forms */
    R_ED,      /* 80..9F: no surrogates */
    R_F0,      /* 90..BF: no overlong 4-byte forms */
    R_F4       /* 80..8F: nothing above U+10FFFF */
};

uint32_t
pm_utf8_feed(uint32_t state, const uint8_t *s, size_t n)
{
    static const uint8_t lo[] = {0x80, 0xA0, 0x80, 0x90, 0x80};
    static const uint8_t hi[] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
    size_t i;

    if (state == PM_UTF8_REJECT)
        return state;
    for (i = 0; i < n; i++) {
        uint8_t c = s[i];

        /* At a boundary, skip ASCII eight bytes at a time. */
        if (state == 0 && c < 0x80) {
            uint64_t w;

            while (i + 8 <= n) {
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            c = s[i];
            if (c < 0x80)
                continue;
        }

        if (state != 0) {
            uint32_t need = state >> 4, range = state & 15;

            if (c < lo[range] || c > hi[range])
                return PM_UTF8_REJECT;
            state = need > 1 ? ((need - 1) << 4) | R_ANY : 0;
            continue;
        }
        if (c < 0x80)
            continue;
        if (c >= 0xC2 && c <= 0xDF)
            state = (1 << 4) | R_ANY;
        else if (c == 0xE0)
            state = (2 << 4) | R_E0;
        else if (c == 0xED)
            state = (2 << 4) | R_ED;
        else if (c >= 0xE1 && c <= 0xEF)
            state = (2 << 4) | R_ANY;
        else if (c == 0xF0)
            state = (3 << 4) | R_F0;
        else if (c >= 0xF1 && c <= 0xF3)
            state = (3 << 4) | R_ANY;
        else if (c == 0xF4)
            state = (3 << 4) | R_F4;
        else
            return PM_UTF8_REJECT;
    }
    return state;
}

bool
pm_utf8_valid(const uint8_t *s, size_t n)
{
    return pm_utf8_feed(PM_UTF8_ACCEPT, s, n) == PM_UTF8_ACCEPT;
}

bool
pm_ws_close_code_valid(uint16_t code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    switch (code) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
    case 1012:
    case 1013:
    case 1014:
        return true;
    }
    return false;
}

void
pm_ws_parser_init(struct pm_ws_parser *p, uint64_t max_message,
                  bool expect_masked)
{
    memset(p, 0, sizeof *p);
    p->max_message = max_message;
    p->expect_masked = expect_masked;
}

void
pm_ws_parser_close(struct pm_ws_parser *p)
{
    if (p->frag != NULL)
        evbuffer_free(p->frag);
    p->frag = NULL;
}

static int
proto_error(uint16_t *close_code, uint16_t code)
{
    *close_code = code;
    return PM_EPROTO;
}

static void
unmask(uint8_t *data, size_t len, const uint8_t mask[4])
{
    size_t i;

    for (i = 0; i < len; i++)
        data[i] ^= mask[i & 3];
}

/* Fill the close fields of ev from a close payload; validate it. */
static int
parse_close(struct pm_ws_event *ev, uint16_t *close_code)
{
    ev->close_code = PM_WS_NO_STATUS;
    ev->close_reason = NULL;
    ev->close_reason_len = 0;
    if (ev->len == 0)
        return PM_OK;
    if (ev->len == 1)
        return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
    ev->close_code = (uint16_t)((ev->data[0] << 8) | ev->data[1]);
    if (!pm_ws_close_code_valid(ev->close_code))
        return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
    ev->close_reason = (const char *)ev->data + 2;
    ev->close_reason_len = ev->len - 2;
    if (!pm_utf8_valid(ev->data + 2, ev->len - 2))
        return proto_error(close_code, PM_WS_INVALID_DATA);
    return PM_OK;
}

int
pm_ws_parse(struct pm_ws_parser *p, struct evbuffer *in, struct pm_ws_event *ev,
            uint16_t *close_code)
{
    uint8_t hdr[14], mask[4] = {0, 0, 0, 0}, b0, b1, op;
    size_t avail, hlen;
    uint64_t plen;
    bool fin, masked;
    uint8_t *data;

    if (p->drain > 0) {
        evbuffer_drain(in, p->drain);
        p->drain = 0;
    }
    if (p->frag_out) {
        evbuffer_drain(p->frag, evbuffer_get_length(p->frag));
        p->frag_out = false;
    }
    for (;;) {
        avail = evbuffer_get_length(in);
        if (avail < 2)
            return PM_EAGAIN;
        evbuffer_copyout(in, hdr, avail < sizeof hdr ? avail : sizeof hdr);
        b0 = hdr[0];
        b1 = hdr[1];
        fin = (b0 & 0x80) != 0;
        op = b0 & 0x0f;
        masked = (b1 & 0x80) != 0;
        if (b0 & 0x70)
            return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
        if (op != PM_WS_CONT && op != PM_WS_TEXT && op != PM_WS_BINARY &&
            op != PM_WS_CLOSE && op != PM_WS_PING && op != PM_WS_PONG)
            return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
        if (masked != p->expect_masked)
            return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
        plen = b1 & 0x7f;
        hlen = 2;
        if (plen == 126) {
            if (avail < 4)
                return PM_EAGAIN;
            plen = ((uint64_t)hdr[2] << 8) | hdr[3];
            hlen = 4;
        } else if (plen == 127) {
            int i;

            if (avail < 10)
                return PM_EAGAIN;
            if (hdr[2] & 0x80)
                return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
            plen = 0;
            for (i = 2; i < 10; i++)
                plen = (plen << 8) | hdr[i];
            hlen = 10;
        }
        if (op & 0x8) { /* control frame */
            if (!fin || plen > 125)
                return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
        } else if (op == PM_WS_CONT) {
            if (p->frag_opcode == 0)
                return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
        } else if (p->frag_opcode != 0) {
            return proto_error(close_code, PM_WS_PROTOCOL_ERROR);
        }
        if (!(op & 0x8)) {
            uint64_t have = p->frag ? evbuffer_get_length(p->frag) : 0;

            if (plen > p->max_message || have + plen > p->max_message)
                return proto_error(close_code, PM_WS_TOO_BIG);
        }
        if (masked) {
            if (avail < hlen + 4)
                return PM_EAGAIN;
            memcpy(mask, hdr + hlen, 4);
            hlen += 4;
        }
        if (avail < hlen + plen)
            return PM_EAGAIN;

        evbuffer_drain(in, hlen);
        data = plen ? evbuffer_pullup(in, (ssize_t)plen) : NULL;
        if (masked && plen)
            unmask(data, (size_t)plen, mask);

        if (op & 0x8 || (fin && op != PM_WS_CONT)) {
            /* A whole message or control frame: hand out in place. */
            ev->opcode = (enum pm_ws_opcode)op;
            ev->data = data ? data : (const uint8_t *)"";
            ev->len = (size_t)plen;
            p->drain = (size_t)plen;
            if (op == PM_WS_TEXT && !pm_utf8_valid(ev->data, ev->len))
                return proto_error(close_code, PM_WS_INVALID_DATA);
            if (op == PM_WS_CLOSE)
                return parse_close(ev, close_code);
            return PM_OK;
        }

        /* A fragment: check UTF-8 as it comes, append, drain. */
        if (op != PM_WS_CONT) {
            p->frag_opcode = op;
            p->utf8 = PM_UTF8_ACCEPT;
            if (p->frag == NULL)
                p->frag = evbuffer_new();
        }
        if (p->frag_opcode == PM_WS_TEXT) {
            p->utf8 = pm_utf8_feed(p->utf8, data, (size_t)plen);
            if (p->utf8 == PM_UTF8_REJECT || (fin && p->utf8 != PM_UTF8_ACCEPT))
                return proto_error(close_code, PM_WS_INVALID_DATA);
        }
        evbuffer_remove_buffer(in, p->frag, (size_t)plen);
        if (!fin)
            continue;
        ev->opcode = (enum pm_ws_opcode)p->frag_opcode;
        ev->len = evbuffer_get_length(p->frag);
        ev->data = ev->len ? evbuffer_pullup(p->frag, -1) : (const uint8_t *)"";
        p->frag_out = true;
        p->frag_opcode = 0;
        return PM_OK;
    }
}

void
pm_ws_write_header(struct evbuffer *out, enum pm_ws_opcode op, uint64_t len)
{
    uint8_t h[10];
    size_t n = 2;

    h[0] = (uint8_t)(0x80 | op);
    if (len < 126) {
        h[1] = (uint8_t)len;
    } else if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        n = 4;
    } else {
        int i;

        h[1] = 127;
        for (i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    evbuffer_add(out, h, n);
}

void
pm_ws_write_frame(struct evbuffer *out, enum pm_ws_opcode op, const void *data,
                  size_t len, const uint8_t *mask)
{
    struct evbuffer_iovec v;
    uint8_t *d;
    size_t i;

    if (mask == NULL) {
        pm_ws_write_header(out, op, len);
        if (len > 0)
            evbuffer_add(out, data, len);
        return;
    }
    /* Client frame: same header with the mask bit, key, masked payload. */
    {
        uint8_t h[14];
        size_t n = 2;

        h[0] = (uint8_t)(0x80 | op);
        if (len < 126) {
            h[1] = (uint8_t)(0x80 | len);
        } else if (len <= 0xffff) {
            h[1] = 0x80 | 126;
            h[2] = (uint8_t)(len >> 8);
            h[3] = (uint8_t)len;
            n = 4;
        } else {
            h[1] = 0x80 | 127;
            for (i = 0; i < 8; i++)
                h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
            n = 10;
        }
        memcpy(h + n, mask, 4);
        evbuffer_add(out, h, n + 4);
    }
    if (len == 0)
        return;
    if (evbuffer_reserve_space(out, (ssize_t)len, &v, 1) != 1) {
        /* Fall back to a copy when the reservation is fragmented. */
        d = pm_xmalloc(len);
        for (i = 0; i < len; i++)
            d[i] = ((const uint8_t *)data)[i] ^ mask[i & 3];
        evbuffer_add(out, d, len);
        free(d);
        return;
    }
    d = v.iov_base;
    for (i = 0; i < len; i++)
        d[i] = ((const uint8_t *)data)[i] ^ mask[i & 3];
    v.iov_len = len;
    evbuffer_commit_space(out, &v, 1);
}

void
pm_ws_write_close(struct evbuffer *out, uint16_t code, const char *reason,
                  const uint8_t *mask)
{
    uint8_t payload[125];
    size_t rlen = reason ? strlen(reason) : 0;

    if (rlen > sizeof payload - 2) {
        /* Cut at a character boundary so the reason stays valid UTF-8. */
        rlen = sizeof payload - 2;
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rlen > 0)
        memcpy(payload + 2, reason, rlen);
    pm_ws_write_frame(out, PM_WS_CLOSE, payload, rlen + 2, mask);
}
