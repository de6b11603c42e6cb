/*
 * pm_ws: RFC 6455 WebSocket over evbuffers (libevent 2.1 has none).
 * The handshake key, an incremental frame parser that enforces masking,
 * reserved bits, opcodes, control-frame rules, fragmentation, UTF-8 of
 * text (also across fragments) and the message size limit, and frame
 * writers for both directions. Pure functions over evbuffers: no sockets,
 * so unit tests and fuzzers drive them directly.
 */
#ifndef PM_WS_H
#define PM_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum pm_ws_opcode {
    PM_WS_CONT = 0x0,
    PM_WS_TEXT = 0x1,
    PM_WS_BINARY = 0x2,
    PM_WS_CLOSE = 0x8,
    PM_WS_PING = 0x9,
    PM_WS_PONG = 0xA
};

enum pm_ws_close_code {
    PM_WS_NORMAL = 1000,
    PM_WS_GOING_AWAY = 1001,
    PM_WS_PROTOCOL_ERROR = 1002,
    PM_WS_UNSUPPORTED = 1003,
    PM_WS_NO_STATUS = 1005, /* never sent on the wire */
    PM_WS_ABNORMAL = 1006,  /* never sent on the wire */
    PM_WS_INVALID_DATA = 1007,
    PM_WS_POLICY = 1008,
    PM_WS_TOO_BIG = 1009,
    PM_WS_INTERNAL = 1011
};

/* Sec-WebSocket-Accept for a client key: base64(SHA1(key + GUID)). */
void pm_ws_accept_key(const char *key, size_t key_len, char out[29]);
/* True if the Sec-WebSocket-Key is base64 of exactly 16 bytes. */
bool pm_ws_key_valid(const char *key, size_t key_len);

/* Incremental UTF-8 validation: feed bytes, state 0 = at a boundary. */
#define PM_UTF8_ACCEPT 0
#define PM_UTF8_REJECT 0xFFFFFFFFu
uint32_t pm_utf8_feed(uint32_t state, const uint8_t *s, size_t n);
bool pm_utf8_valid(const uint8_t *s, size_t n);

struct pm_ws_parser {
    uint64_t max_message; /* limit on a whole (reassembled) message */
    bool expect_masked;   /* server side: client frames must be masked */
    /* reassembly of a fragmented message */
    struct evbuffer *frag; /* created on first fragment, owned */
    uint8_t frag_opcode;   /* TEXT or BINARY while fragmented, else 0 */
    uint32_t utf8;         /* validator state across fragments */
    /* what the last pm_ws_parse call handed out, released on the next */
    size_t drain;  /* bytes of an in-place event still in the input */
    bool frag_out; /* a reassembled message in frag was handed out */
};

/* What pm_ws_parse found. */
struct pm_ws_event {
    enum pm_ws_opcode opcode; /* TEXT, BINARY, PING, PONG or CLOSE */
    const uint8_t *data;      /* unmasked payload; valid until next parse */
    size_t len;
    uint16_t close_code;      /* CLOSE: code received (1005 if none) */
    const char *close_reason; /* CLOSE: points into data (not NUL-ended) */
    size_t close_reason_len;
};

/* server: expect_masked true. Caller owns p; pm_ws_parser_close frees. */
void pm_ws_parser_init(struct pm_ws_parser *p, uint64_t max_message,
                       bool expect_masked);
void pm_ws_parser_close(struct pm_ws_parser *p);

/*
 * Consume at most one complete message or control frame from in.
 * Returns PM_OK with *ev filled, PM_EAGAIN when more bytes are needed
 * (a non-final fragment may have been consumed), or PM_EPROTO with
 * *close_code set to the code to close with (1002, 1007 or 1009).
 */
int pm_ws_parse(struct pm_ws_parser *p, struct evbuffer *in,
                struct pm_ws_event *ev, uint16_t *close_code);

/* Append one final frame. mask: NULL for server frames, else 4 bytes. */
void pm_ws_write_frame(struct evbuffer *out, enum pm_ws_opcode op,
                       const void *data, size_t len, const uint8_t *mask);
/* Append a frame header only (server side, unmasked, FIN set). */
void pm_ws_write_header(struct evbuffer *out, enum pm_ws_opcode op,
                        uint64_t len);
/* Append a close frame with code and optional reason (truncated to fit). */
void pm_ws_write_close(struct evbuffer *out, uint16_t code, const char *reason,
                       const uint8_t *mask);
/* True for a close code a peer may send (RFC 6455 7.4). */
bool pm_ws_close_code_valid(uint16_t code);

#endif
