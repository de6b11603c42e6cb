/*
 * chat-loadgen: room fan-out load generator for p2pmesh's chat role and a
 * Socket.IO 4 chat server (tests/bench/chat_bench.sh, docs/benchmarks.md
 * "Chat (issue 5)").
 *
 * One thread, one libevent event_base, its own RFC 6455 client (the same
 * one as pm-loadgen.c: HTTP upgrade with the Sec-WebSocket-Accept check,
 * masked frames with a fresh key per frame, server frames parsed
 * minimally, pings answered).
 *
 * --conns N connections in rooms of --room-size K (connection i is member
 * i % K of room "<prefix>-<i / K>"); every connection is authenticated and
 * joined before traffic starts. Members 0..S-1 of every room
 * (--senders S) send messages; every member counts the `message` events it
 * receives (the DELIVERIES, the sender's own copy included: both servers
 * send it).
 *
 *   p2pmesh  (--server p2pmesh): GET /ws?token=JWT (HS256 tokens signed here
 *            with --jwt-secret for user id user_base+i+1, username
 *            "bu<user_base+i>": the users must exist in the database),
 *            wait for `welcome`, {"type":"join","room":R}, wait for
 *            `joined`. A message is
 *            {"type":"message","room":R,"body":B,"client_id":"c<seq>"};
 *            the server answers {"type":"ack","client_id":...} once the
 *            message is committed and sends {"type":"message",...} to every
 *            member.
 *   socketio (--server socketio): Engine.IO v4 over WebSocket only
 *            (GET /socket.io/?EIO=4&transport=websocket): the server's open
 *            packet 0{...}, CONNECT `40{"username":"bu<i>"}`, the server's
 *            `40{"sid":..}`, then `420["join",R]` answered by the ack
 *            `430[...]`. A message is `42<seq>["message",{"room":R,"body":B,
 *            "client_id":"c<seq>"}]` (ack id = seq, from 1), acked by
 *            `43<seq>[{...}]`; deliveries are `42["message",{...}]`. Engine.IO
 *            pings ("2") are answered ("3").
 *
 * The body is "<t>.<sender>.<seq>." padded with 'x' to --size characters:
 * t is the message's intended send time (CLOCK_MONOTONIC ns since the
 * generator started), found again on receipt, so each delivery's end-to-end
 * latency is known; each receiver also checks that the sender's sequence
 * numbers arrive in order, that `from` names the sender and that the
 * message belongs to its room.
 *
 *   closed loop (--rate 0): each sender keeps --window messages unacked;
 *                every ack (or error for one of its messages) sends the
 *                next one.
 *   open loop   (--rate R): a timer sends R messages/s in total at their
 *                intended times, round robin over all senders, whatever the
 *                server does (latency from the intended time: no
 *                coordinated omission).
 *
 * Accounting as in pm-loadgen: the server's utime+stime (all threads) from
 * /proc/PID/stat at the start and end of the measured window, its VmRSS,
 * the generator's own CPU (getrusage) and the machine's (/proc/stat).
 * Deliveries and acks are counted by receive time inside the window (the
 * rates) and by intended send time (loss and latency: after the window the
 * generator waits --drain s for everything sent inside it).
 *
 * Build: cc -O2 -o chat-loadgen chat-loadgen.c \
 *            $(pkg-config --cflags --libs libevent openssl)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lg_common.h"

#define MAX_OUTQ (8u << 20) /* per-connection send queue cap */
#define MAX_ERR_PRINT 8     /* server error messages echoed */
#define RING 4096           /* send times kept per sender (ack latency) */

/* ------------------------------------------------------------------ */
/* options and global state                                            */

enum server_kind { SK_P2PMESH, SK_SOCKETIO };
enum cstate {
    CS_FREE,
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_AUTH,    /* p2pmesh: until welcome; socketio: until 40{sid} */
    CS_JOINING, /* until joined / the join ack */
    CS_READY,
    CS_CLOSED
};
enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

struct opts {
    char host[64];
    int port;
    enum server_kind server;
    int conns;
    int room_size;
    int senders; /* per room */
    char prefix[32];
    double rate; /* total msgs/s, 0 = closed loop */
    int window;  /* closed loop: unacked messages per sender */
    double duration, warmup, drain, start_delay;
    int size; /* body characters */
    int pid;
    char secret[256];
    int user_base;
    int src_addrs;
    int concurrency;
    double setup_timeout;
    bool json, verbose, allow_remote;
};

struct conn {
    int fd;
    int idx;
    int room, member;
    bool sender;
    enum cstate st;
    struct event rev, wev;
    bool rev_on, wev_on;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    uint8_t *frag;
    size_t frag_len, frag_cap;
    uint8_t frag_op;
    char key[32];
    uint64_t next_seq; /* next message to send, from 1 */
    uint32_t inflight;
    uint64_t *sent_at; /* senders: intended time of seq, at seq % RING */
    uint64_t *exp_seq; /* per sender slot of the room: next seq expected */
    uint64_t t_phase;
    bool closing;
};

static struct opts O;
static struct event_base *base;
static struct conn *conns;
static int nconns, nrooms, spr; /* senders per room (<= room size) */
static int *senders;            /* conn indexes of the senders */
static int nsenders;
static struct sockaddr_in dst_addr;
static int n_src;

static enum phase phase = PH_SETUP;
static uint64_t t_base, t_run0, t_meas0, t_meas1, t_setup_done, t_setup_start;
static int next_connect, in_setup, n_ready, n_failed;

/* traffic */
static uint64_t sent_total, sent_win, expected_win;
static uint64_t deliv_total, deliv_during_win, deliv_win;
static uint64_t acks_total, acks_ok_total, acks_during_win, acks_win, nacks_win;
static uint64_t send_dropped, seq_gaps, seq_dup, bad_from, bad_payload,
    wrong_room, ack_unknown, ring_overflow;
static uint64_t other_msgs, server_errors, server_closes, pings_rx,
    unexpected_eof, proto_errors, masked_rx;
static int errs_printed;

static uint64_t sched_k;
static double sched_interval_ns;
static struct event *ev_sched, *ev_phase, *ev_tick, *ev_deadline, *ev_sigint;

static double srv_cpu0 = -1, srv_cpu1 = -1, cli_cpu0, cli_cpu1;
static double mach_cpu0 = -1, mach_cpu1 = -1;
static double setup_cpu0 = -1, setup_cpu1 = -1; /* server CPU during setup */
static long srv_rss1 = -1;
static uint64_t t_acct0, t_acct1;

static struct lg_hist h_lat, h_ack, h_lag;

static char *pad_str;
static size_t last_frame_len;
static int exit_code;
static struct conn *corked;

/* ------------------------------------------------------------------ */
/* small helpers (the shared ones are in lg_common.c)                    */

/* Digits at *pp (advanced past them); false when there are none. */
static bool
parse_u64(const uint8_t **pp, const uint8_t *e, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    int nd = 0;
    while (p < e && *p >= '0' && *p <= '9' && nd < 20) {
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
        nd++;
    }
    if (nd == 0)
        return false;
    *pp = p;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------ */
/* HS256 tokens with the claims p2pmesh issues (docs/chat.md)           */

static size_t
b64url(char *out, const unsigned char *in, size_t n)
{
    unsigned char tmp[1024];
    int l = EVP_EncodeBlock(tmp, in, (int)n);
    size_t o = 0;
    for (int i = 0; i < l; i++) {
        char ch = (char)tmp[i];
        if (ch == '=')
            break;
        out[o++] = ch == '+' ? '-' : ch == '/' ? '_' : ch;
    }
    out[o] = '\0';
    return o;
}

static void
make_token(int i, char *out, size_t outlen)
{
    char payload[256], signing[768];
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    long long now = (long long)time(NULL);
    int uid = O.user_base + i + 1;
    int pn = snprintf(payload, sizeof payload,
                      "{\"sub\":\"%d\",\"userId\":%d,\"username\":\"bu%d\","
                      "\"ver\":0,\"iat\":%lld,\"exp\":%lld}",
                      uid, uid, O.user_base + i, now, now + 86400);
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    size_t n = b64url(signing, (const unsigned char *)hdr, strlen(hdr));
    signing[n++] = '.';
    n += b64url(signing + n, (const unsigned char *)payload, (size_t)pn);
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, O.secret,
                   strlen(O.secret), (const unsigned char *)signing, n, mac,
                   sizeof mac, &maclen)) {
        lg_log("HMAC failed");
        exit(1);
    }
    char sig[128];
    b64url(sig, mac, maclen);
    snprintf(out, outlen, "%s.%s", signing, sig);
}

/* ------------------------------------------------------------------ */
/* connection I/O (as in pm-loadgen.c; WebSocket helpers in lg_common) */

static void conn_close(struct conn *c, bool failed);
static void setup_progress(void);
static void on_write(evutil_socket_t fd, short what, void *arg);

static bool
conn_send_raw(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->st == CS_FREE || c->st == CS_CLOSED || c->fd < 0)
        return false;
    if (c->out_len == 0 && c->st != CS_CONNECTING && c != corked) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)n)
            return true;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                unexpected_eof++;
                conn_close(c, true);
                return false;
            }
            w = 0;
        }
        p += w;
        n -= (size_t)w;
    }
    if (c->out_len + n > MAX_OUTQ) {
        send_dropped++;
        return false;
    }
    if (c->out_off + c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len);
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + n)
                cap *= 2;
            c->out = lg_xrealloc(c->out, cap);
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_off + c->out_len, p, n);
    c->out_len += n;
    if (!c->wev_on && c->st != CS_CONNECTING && c != corked) {
        event_add(&c->wev, NULL);
        c->wev_on = true;
    }
    return true;
}

/* Send the frame of len payload bytes built in lg_frame_slot(len). */
static bool
ws_send_slot(struct conn *c, uint8_t opcode, size_t len)
{
    size_t n;
    const uint8_t *h = lg_frame_seal(opcode, len, &n);
    return conn_send_raw(c, h, n);
}

static bool
ws_send(struct conn *c, uint8_t opcode, const void *data, size_t len)
{
    uint8_t *pl = lg_frame_slot(len);
    if (len)
        memcpy(pl, data, len);
    return ws_send_slot(c, opcode, len);
}

static bool
ws_send_text(struct conn *c, const char *s)
{
    return ws_send(c, 0x1, s, strlen(s));
}

static void
conn_free_bufs(struct conn *c)
{
    free(c->in);
    free(c->out);
    free(c->frag);
    c->in = c->out = c->frag = NULL;
    c->in_len = c->in_cap = c->out_off = c->out_len = c->out_cap = 0;
    c->frag_len = c->frag_cap = 0;
}

static void
conn_close(struct conn *c, bool failed)
{
    if (c->st == CS_CLOSED || c->st == CS_FREE)
        return;
    bool was_setup = c->st != CS_READY;
    if (c->rev_on)
        event_del(&c->rev);
    if (c->wev_on)
        event_del(&c->wev);
    c->rev_on = c->wev_on = false;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->st = CS_CLOSED;
    conn_free_bufs(c);
    if (was_setup) {
        in_setup--;
        if (failed)
            n_failed++;
        if (phase == PH_SETUP)
            setup_progress();
    } else {
        n_ready--;
    }
}

static void
conn_finish(struct conn *c)
{
    if (c->st == CS_READY || c->st == CS_JOINING || c->st == CS_AUTH) {
        uint8_t cl[2] = {0x03, 0xE8};
        ws_send(c, 0x8, cl, 2);
    }
    conn_close(c, false);
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)what;
    c->wev_on = false;
    if (c->out_len == 0)
        return;
    ssize_t w =
        send(fd, c->out + c->out_off, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            event_add(&c->wev, NULL);
            c->wev_on = true;
            return;
        }
        unexpected_eof++;
        conn_close(c, true);
        return;
    }
    c->out_off += (size_t)w;
    c->out_len -= (size_t)w;
    if (c->out_len == 0) {
        c->out_off = 0;
        if (c->out_cap > 65536) {
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    } else {
        event_add(&c->wev, NULL);
        c->wev_on = true;
    }
}

/* ------------------------------------------------------------------ */
/* chat traffic                                                        */

static void
room_name(int room, char *out, size_t n)
{
    snprintf(out, n, "%s-%d", O.prefix, room);
}

static bool
in_window(uint64_t t_int)
{
    return t_int >= t_meas0 && t_int < t_meas1;
}

/* Send sender c's next message, intended at t_int. */
static void
send_message(struct conn *c, uint64_t t_int)
{
    if (c->st != CS_READY) {
        send_dropped++;
        return;
    }
    char room[64];
    room_name(c->room, room, sizeof room);
    uint64_t seq = c->next_seq;
    size_t cap = 160 + strlen(room) + (size_t)O.size;
    char *pl = (char *)lg_frame_slot(cap);
    size_t n = 0;
    char body[96];
    size_t bn = 0;
    bn += lg_fmt_u64(body + bn, t_int - t_base);
    body[bn++] = '.';
    bn += lg_fmt_u64(body + bn, (uint64_t)c->idx);
    body[bn++] = '.';
    bn += lg_fmt_u64(body + bn, seq);
    body[bn++] = '.';
    size_t padn = (size_t)O.size > bn ? (size_t)O.size - bn : 0;
    if (O.server == SK_P2PMESH) {
        n += (size_t)sprintf(pl + n,
                             "{\"type\":\"message\",\"room\":\"%s\","
                             "\"body\":\"",
                             room);
    } else {
        memcpy(pl + n, "42", 2);
        n += 2;
        n += lg_fmt_u64(pl + n, seq);
        n += (size_t)sprintf(pl + n,
                             "[\"message\",{\"room\":\"%s\",\"body\":\"", room);
    }
    memcpy(pl + n, body, bn);
    n += bn;
    memcpy(pl + n, pad_str, padn);
    n += padn;
    memcpy(pl + n, "\",\"client_id\":\"c", 16);
    n += 16;
    n += lg_fmt_u64(pl + n, seq);
    if (O.server == SK_P2PMESH) {
        memcpy(pl + n, "\"}", 2);
        n += 2;
    } else {
        memcpy(pl + n, "\"}]", 3);
        n += 3;
    }
    last_frame_len = n;
    c->next_seq++;
    if (c->inflight >= RING)
        ring_overflow++;
    c->sent_at[seq % RING] = t_int;
    if (!ws_send_slot(c, 0x1, n))
        return;
    c->inflight++;
    sent_total++;
    if (in_window(t_int)) {
        sent_win++;
        expected_win += (uint64_t)O.room_size;
    }
}

static void
note_server_error(const struct conn *c, const uint8_t *d, size_t len)
{
    server_errors++;
    if (errs_printed < MAX_ERR_PRINT) {
        errs_printed++;
        lg_log("conn %d: server says: %.*s", c->idx,
               (int)(len > 300 ? 300 : len), (const char *)d);
    }
}

/* A `message` event: d..e holds the frame; p points after "body":" */
static void
delivery(struct conn *c, const uint8_t *d, const uint8_t *e, const uint8_t *p)
{
    uint64_t now = lg_mono_ns();
    uint64_t t, s, seq;
    if (!parse_u64(&p, e, &t) || p >= e || *p++ != '.' ||
        !parse_u64(&p, e, &s) || p >= e || *p++ != '.' ||
        !parse_u64(&p, e, &seq) || s >= (uint64_t)nconns) {
        bad_payload++;
        if (bad_payload <= 3)
            lg_log("conn %d: unparsable message: %.*s", c->idx,
                   (int)(e - d > 200 ? 200 : e - d), (const char *)d);
        return;
    }
    const struct conn *snd = &conns[s];
    if (snd->room != c->room || !snd->sender) {
        wrong_room++;
        return;
    }
    /* "from" names the sender: bu<user_base + s> */
    const uint8_t *f = memmem(d, (size_t)(e - d), "\"from\":\"bu", 10);
    uint64_t fu;
    if (f == NULL || (f += 10, !parse_u64(&f, e, &fu)) ||
        fu != (uint64_t)O.user_base + s || f >= e || *f != '"') {
        bad_from++;
        if (bad_from <= 3)
            lg_log("conn %d: wrong or missing from: %.*s", c->idx,
                   (int)(e - d > 200 ? 200 : e - d), (const char *)d);
    }
    uint64_t *exp = &c->exp_seq[snd->member];
    if (seq != *exp) {
        if (seq > *exp)
            seq_gaps += seq - *exp;
        else
            seq_dup++;
    }
    if (seq >= *exp)
        *exp = seq + 1;
    deliv_total++;
    if (phase == PH_MEASURE)
        deliv_during_win++;
    uint64_t t_int = t + t_base;
    if (in_window(t_int)) {
        deliv_win++;
        lg_h_add(&h_lat, now > t_int ? now - t_int : 0);
    }
}

/* The ack (or an error answer) for c's message seq. */
static void
acked(struct conn *c, uint64_t seq, bool ok)
{
    uint64_t now = lg_mono_ns();
    if (!c->sender || seq == 0 || seq >= c->next_seq || c->inflight == 0) {
        ack_unknown++;
        return;
    }
    c->inflight--;
    acks_total++;
    if (ok)
        acks_ok_total++;
    if (phase == PH_MEASURE && ok)
        acks_during_win++;
    uint64_t t_int = c->sent_at[seq % RING];
    if (in_window(t_int)) {
        if (ok) {
            acks_win++;
            lg_h_add(&h_ack, now > t_int ? now - t_int : 0);
        } else {
            nacks_win++;
        }
    }
    if (O.rate <= 0 && (phase == PH_WARMUP || phase == PH_MEASURE))
        send_message(c, now);
}

static void
conn_ready(struct conn *c)
{
    c->st = CS_READY;
    n_ready++;
    in_setup--;
    setup_progress();
}

static void
send_join(struct conn *c)
{
    char buf[160], room[64];
    room_name(c->room, room, sizeof room);
    if (O.server == SK_P2PMESH)
        snprintf(buf, sizeof buf, "{\"type\":\"join\",\"room\":\"%s\"}", room);
    else
        snprintf(buf, sizeof buf, "420[\"join\",\"%s\"]", room);
    c->st = CS_JOINING;
    c->t_phase = lg_mono_ns();
    ws_send_text(c, buf);
}

static void
handle_p2pmesh(struct conn *c, const uint8_t *d, size_t len)
{
    const uint8_t *e = d + len;
    const uint8_t *p = memmem(d, len, "\"body\":\"", 8);
    if (p && memmem(d, len, "\"type\":\"message\"", 16)) {
        delivery(c, d, e, p + 8);
        return;
    }
    if (len > 13 && memcmp(d, "{\"type\":\"ack\"", 13) == 0) {
        const uint8_t *q = memmem(d, len, "\"client_id\":\"c", 14);
        uint64_t seq = 0;
        if (q) {
            q += 14;
            parse_u64(&q, e, &seq);
        }
        acked(c, seq, true);
        return;
    }
    if (memmem(d, len, "\"type\":\"error\"", 14)) {
        note_server_error(c, d, len);
        const uint8_t *q = memmem(d, len, "\"client_id\":\"c", 14);
        uint64_t seq = 0;
        if (q) {
            q += 14;
            if (parse_u64(&q, e, &seq))
                acked(c, seq, false);
        }
        return;
    }
    if (c->st == CS_AUTH && memmem(d, len, "\"type\":\"welcome\"", 16)) {
        send_join(c);
        return;
    }
    if (c->st == CS_JOINING && memmem(d, len, "\"type\":\"joined\"", 15)) {
        conn_ready(c);
        return;
    }
    other_msgs++; /* presence and the like */
}

static void
handle_socketio(struct conn *c, const uint8_t *d, size_t len)
{
    const uint8_t *e = d + len;
    if (len == 0) {
        proto_errors++;
        return;
    }
    switch (d[0]) {
    case '0': /* Engine.IO open */
        if (c->st == CS_AUTH) {
            char buf[96];
            snprintf(buf, sizeof buf, "40{\"username\":\"bu%d\"}",
                     O.user_base + c->idx);
            ws_send_text(c, buf);
        } else {
            other_msgs++;
        }
        return;
    case '2': /* Engine.IO ping */
        pings_rx++;
        ws_send_text(c, "3");
        return;
    case '1': /* Engine.IO close */
        server_closes++;
        return;
    case '4':
        break;
    default:
        other_msgs++;
        return;
    }
    if (len < 2) {
        proto_errors++;
        return;
    }
    if (d[1] == '2') { /* event */
        const uint8_t *p = memmem(d, len, "\"body\":\"", 8);
        if (p && len > 12 && memcmp(d + 2, "[\"message\"", 10) == 0) {
            delivery(c, d, e, p + 8);
            return;
        }
        other_msgs++;
        return;
    }
    if (d[1] == '3') { /* ack: 43<id>[...] */
        const uint8_t *q = d + 2;
        uint64_t id;
        if (!parse_u64(&q, e, &id)) {
            proto_errors++;
            return;
        }
        bool err = memmem(q, (size_t)(e - q), "\"error\"", 7) != NULL;
        if (id == 0 && c->st == CS_JOINING) {
            if (err) {
                note_server_error(c, d, len);
                conn_close(c, true);
            } else {
                conn_ready(c);
            }
            return;
        }
        if (err)
            note_server_error(c, d, len);
        acked(c, id, !err);
        return;
    }
    if (d[1] == '0') { /* CONNECT acknowledged */
        if (c->st == CS_AUTH)
            send_join(c);
        else
            other_msgs++;
        return;
    }
    if (d[1] == '4' || d[1] == '1') { /* CONNECT_ERROR, DISCONNECT */
        note_server_error(c, d, len);
        server_closes++;
        conn_close(c, c->st != CS_READY);
        return;
    }
    other_msgs++;
}

static void
handle_message(struct conn *c, const uint8_t *d, size_t len)
{
    if (O.server == SK_P2PMESH)
        handle_p2pmesh(c, d, len);
    else
        handle_socketio(c, d, len);
}

static bool
handle_frame(struct conn *c, bool fin, uint8_t op, const uint8_t *d, size_t len)
{
    switch (op) {
    case 0x1:
    case 0x2:
        if (c->frag_op) {
            proto_errors++;
            conn_close(c, true);
            return false;
        }
        if (fin) {
            handle_message(c, d, len);
        } else {
            c->frag_op = op;
            c->frag_len = 0;
            goto append;
        }
        return c->st != CS_CLOSED;
    case 0x0:
        if (!c->frag_op) {
            proto_errors++;
            conn_close(c, true);
            return false;
        }
    append:
        if (c->frag_len + len > LG_MAX_FRAME) {
            proto_errors++;
            conn_close(c, true);
            return false;
        }
        if (c->frag_len + len > c->frag_cap) {
            c->frag_cap = (c->frag_len + len) * 2 + 256;
            c->frag = lg_xrealloc(c->frag, c->frag_cap);
        }
        memcpy(c->frag + c->frag_len, d, len);
        c->frag_len += len;
        if (fin && op == 0x0) {
            c->frag_op = 0;
            handle_message(c, c->frag, c->frag_len);
            c->frag_len = 0;
        }
        return c->st != CS_CLOSED;
    case 0x9:
        pings_rx++;
        if (len > 125) {
            proto_errors++;
            conn_close(c, true);
            return false;
        }
        {
            uint8_t tmp[125];
            memcpy(tmp, d, len);
            ws_send(c, 0xA, tmp, len);
        }
        return c->st != CS_CLOSED;
    case 0xA:
        return true;
    case 0x8: {
        unsigned code = len >= 2 ? ((unsigned)d[0] << 8 | d[1]) : 1005;
        if (!c->closing && phase != PH_DONE) {
            server_closes++;
            if (errs_printed < MAX_ERR_PRINT) {
                errs_printed++;
                lg_log("conn %d: server closed with %u %.*s", c->idx, code,
                       (int)(len > 2 ? len - 2 : 0), (const char *)d + 2);
            }
            uint8_t cl[2] = {len >= 2 ? d[0] : 0x03, len >= 2 ? d[1] : 0xE8};
            ws_send(c, 0x8, cl, 2);
        }
        conn_close(c, c->st != CS_READY);
        return false;
    }
    default:
        proto_errors++;
        conn_close(c, true);
        return false;
    }
}

static size_t
parse_frames(struct conn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (n - off >= 2) {
        struct lg_frame f;
        int r = lg_frame_head(p + off, n - off, &f);
        if (r < 0) {
            proto_errors++;
            conn_close(c, true);
            return n;
        }
        if (r == 0)
            break;
        uint8_t *d = p + off + f.hl;
        if (f.masked) /* servers must not mask; unmasked, counted, go on */
            masked_rx++;
        off += f.hl + (size_t)f.plen;
        if (!handle_frame(c, f.fin, f.op, d, (size_t)f.plen))
            return n;
    }
    return off;
}

static void on_read_body(evutil_socket_t fd, struct conn *c);

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)what;
    corked = c;
    on_read_body(fd, c);
    corked = NULL;
    if (c->st != CS_CLOSED && c->out_len && !c->wev_on)
        on_write(c->fd, EV_WRITE, c);
}

static void
on_read_body(evutil_socket_t fd, struct conn *c)
{
    for (int iter = 0; iter < 8; iter++) {
        lg_scratch_reserve(c->in_len);
        size_t have = c->in_len;
        if (have)
            memcpy(lg_scratch, c->in, have);
        size_t room = lg_scratch_cap - have;
        ssize_t r = recv(fd, lg_scratch + have, room, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                       errno != EINTR)) {
            if (phase != PH_DONE && !c->closing) {
                unexpected_eof++;
                if (errs_printed < MAX_ERR_PRINT) {
                    errs_printed++;
                    lg_log("conn %d: connection %s (state %d)", c->idx,
                           r == 0 ? "closed by server" : strerror(errno),
                           c->st);
                }
            }
            conn_close(c, c->st != CS_READY);
            return;
        }
        if (r < 0)
            return;
        size_t n = have + (size_t)r;
        size_t off = 0;
        if (c->st == CS_HANDSHAKE) {
            long hl = lg_ws_upgrade(lg_scratch, n, c->key, c->idx,
                                    &errs_printed, MAX_ERR_PRINT);
            if (hl < 0) {
                conn_close(c, true);
                return;
            }
            if (hl == 0)
                goto keep;
            off = (size_t)hl;
            c->st = CS_AUTH; /* the server speaks first in both protocols */
            c->t_phase = lg_mono_ns();
        }
        off += parse_frames(c, lg_scratch + off, n - off);
        if (c->st == CS_CLOSED)
            return;
    keep:
        lg_keep_input(&c->in, &c->in_len, &c->in_cap, lg_scratch + off,
                      n - off);
        if ((size_t)r < room)
            return;
    }
}

/* ------------------------------------------------------------------ */
/* connection setup                                                    */

static void
on_connected(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)what;
    c->wev_on = false;
    int err = lg_sock_error(fd);
    if (err) {
        if (errs_printed < MAX_ERR_PRINT) {
            errs_printed++;
            lg_log("conn %d: connect: %s", c->idx, strerror(err));
        }
        conn_close(c, true);
        return;
    }
    event_assign(&c->wev, base, c->fd, EV_WRITE, on_write, c);
    event_assign(&c->rev, base, c->fd, EV_READ | EV_PERSIST, on_read, c);
    event_add(&c->rev, NULL);
    c->rev_on = true;

    char req[1536];
    int n;
    if (O.server == SK_P2PMESH) {
        char tok[1024];
        make_token(c->idx, tok, sizeof tok);
        n = snprintf(req, sizeof req,
                     "GET /ws?token=%s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n" LG_WS_UPGRADE_HEADERS,
                     tok, O.host, O.port, c->key);
    } else {
        n = snprintf(req, sizeof req,
                     "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                     "Host: %s:%d\r\n" LG_WS_UPGRADE_HEADERS,
                     O.host, O.port, c->key);
    }
    c->st = CS_HANDSHAKE;
    c->t_phase = lg_mono_ns();
    conn_send_raw(c, (const uint8_t *)req, (size_t)n);
}

static bool
conn_start(struct conn *c)
{
    int fd = lg_socket(c->idx, n_src);
    if (fd < 0)
        return false;
    c->fd = fd;
    c->st = CS_CONNECTING;
    c->t_phase = lg_mono_ns();
    in_setup++;
    lg_ws_key(c->key);
    event_assign(&c->wev, base, fd, EV_WRITE, on_connected, c);
    if (connect(fd, (const struct sockaddr *)&dst_addr, sizeof dst_addr) < 0 &&
        errno != EINPROGRESS) {
        if (errs_printed < MAX_ERR_PRINT) {
            errs_printed++;
            lg_log("conn %d: connect: %s", c->idx, strerror(errno));
        }
        conn_close(c, true);
        return true;
    }
    event_add(&c->wev, NULL);
    c->wev_on = true;
    return true;
}

static void start_run(void);

static void
setup_progress(void)
{
    static bool busy;
    if (busy)
        return;
    busy = true;
    while (next_connect < nconns && in_setup < O.concurrency) {
        struct conn *c = &conns[next_connect++];
        if (!conn_start(c)) {
            n_failed++;
            c->st = CS_CLOSED;
        }
    }
    busy = false;
    if (phase == PH_SETUP && next_connect >= nconns && in_setup == 0) {
        t_setup_done = lg_mono_ns();
        setup_cpu1 = lg_proc_cpu(O.pid);
        start_run();
    }
}

/* ------------------------------------------------------------------ */
/* run phases                                                          */

static void
finish(void)
{
    phase = PH_DONE;
    event_base_loopbreak(base);
}

static uint64_t
sched_run(void)
{
    if (phase != PH_WARMUP && phase != PH_MEASURE)
        return UINT64_MAX;
    uint64_t now = lg_mono_ns();
    int budget = 20000;
    while (budget-- > 0) {
        uint64_t t_int =
            t_run0 + (uint64_t)((double)sched_k * sched_interval_ns);
        if (t_int > now || t_int >= t_meas1)
            break;
        struct conn *c = &conns[senders[sched_k % (uint64_t)nsenders]];
        if (t_int >= t_meas0)
            lg_h_add(&h_lag, now - t_int);
        send_message(c, t_int);
        sched_k++;
    }
    uint64_t next = t_run0 + (uint64_t)((double)sched_k * sched_interval_ns);
    return next >= t_meas1 ? UINT64_MAX : next;
}

static void
closed_loop_kick(void)
{
    uint64_t now = lg_mono_ns();
    for (int w = 0; w < O.window; w++)
        for (int i = 0; i < nsenders; i++)
            send_message(&conns[senders[i]], now);
}

static void
on_sched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (O.rate <= 0) {
        if (phase == PH_WARMUP || phase == PH_MEASURE)
            closed_loop_kick();
        return;
    }
    uint64_t next = sched_run();
    if (next == UINT64_MAX)
        return;
    uint64_t now2 = lg_mono_ns();
    uint64_t d = next > now2 ? next - now2 : 0;
    struct timeval tv = {(time_t)(d / 1000000000ull),
                         (suseconds_t)((d % 1000000000ull) / 1000)};
    event_add(ev_sched, &tv);
}

static void
arm_phase_timer(uint64_t at)
{
    uint64_t now = lg_mono_ns();
    uint64_t d = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(d / 1000000000ull),
                         (suseconds_t)((d % 1000000000ull) / 1000)};
    event_add(ev_phase, &tv);
}

static void
on_phase(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (phase == PH_WARMUP) {
        phase = PH_MEASURE;
        t_acct0 = lg_mono_ns();
        srv_cpu0 = lg_proc_cpu(O.pid);
        cli_cpu0 = lg_cpu_self();
        mach_cpu0 = lg_machine_busy();
        arm_phase_timer(t_meas1);
    } else if (phase == PH_MEASURE) {
        t_acct1 = lg_mono_ns();
        srv_cpu1 = lg_proc_cpu(O.pid);
        cli_cpu1 = lg_cpu_self();
        mach_cpu1 = lg_machine_busy();
        srv_rss1 = lg_proc_rss_kb(O.pid);
        phase = PH_DRAIN;
        arm_phase_timer(t_acct1 + (uint64_t)(O.drain * 1e9));
    } else if (phase == PH_DRAIN) {
        finish();
    }
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = lg_mono_ns();
    if (phase == PH_SETUP) {
        if (now - t_setup_start > (uint64_t)(O.setup_timeout * 1e9)) {
            int st[CS_CLOSED + 1] = {0};
            for (int i = 0; i < nconns; i++)
                st[conns[i].st]++;
            lg_log("setup timed out: %d ready, %d failed, %d in progress of %d "
                   "(connecting %d, upgrading %d, authenticating %d, joining "
                   "%d)",
                   n_ready, n_failed, in_setup, nconns, st[CS_CONNECTING],
                   st[CS_HANDSHAKE], st[CS_AUTH], st[CS_JOINING]);
            exit_code = 1;
            finish();
        }
    } else if (phase == PH_DRAIN) {
        if (deliv_win >= expected_win && acks_win + nacks_win >= sent_win)
            finish();
    }
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    lg_log("overall deadline reached; stopping");
    exit_code = 1;
    finish();
}

static void
on_sigint(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    lg_log("interrupted");
    exit_code = 1;
    finish();
}

static void
start_run(void)
{
    if (n_ready != nconns) {
        lg_log("setup failed: %d of %d connections ready (%d failed)", n_ready,
               nconns, n_failed);
        exit_code = 1;
        finish();
        return;
    }
    uint64_t now = lg_mono_ns();
    t_run0 = now + (uint64_t)(O.start_delay * 1e9);
    t_meas0 = t_run0 + (uint64_t)(O.warmup * 1e9);
    t_meas1 = t_meas0 + (uint64_t)(O.duration * 1e9);
    phase = PH_WARMUP;
    if (O.verbose)
        lg_log("all %d connections ready in %.2f s", nconns,
               (double)(t_setup_done - t_setup_start) / 1e9);
    arm_phase_timer(t_meas0);
    if (O.rate > 0) {
        sched_interval_ns = 1e9 / O.rate;
        sched_k = 0;
    }
    uint64_t d = t_run0 > now ? t_run0 - now : 0;
    struct timeval tv = {(time_t)(d / 1000000000ull),
                         (suseconds_t)((d % 1000000000ull) / 1000)};
    event_add(ev_sched, &tv);
}

/* ------------------------------------------------------------------ */
/* report                                                              */

static void
report(void)
{
    double win = (double)(t_acct1 - t_acct0) / 1e9;
    double srv = srv_cpu0 >= 0 && srv_cpu1 >= 0 ? srv_cpu1 - srv_cpu0 : -1;
    double cli = cli_cpu1 - cli_cpu0;
    double mach = mach_cpu0 >= 0 && mach_cpu1 >= 0 ? mach_cpu1 - mach_cpu0 : -1;
    double other = mach >= 0 ? mach - cli - (srv >= 0 ? srv : 0) : -1;
    if (other < 0 && mach >= 0)
        other = 0;
    double dps = win > 0 ? (double)deliv_during_win / win : 0;
    double aps = win > 0 ? (double)acks_during_win / win : 0;
    double d_cpu = srv > 0 ? (double)deliv_during_win / srv : -1;
    double a_cpu = srv > 0 ? (double)acks_during_win / srv : -1;
    uint64_t lost = expected_win > deliv_win ? expected_win - deliv_win : 0;
    uint64_t unacked =
        sent_win > acks_win + nacks_win ? sent_win - acks_win - nacks_win : 0;
    const char *sn = O.server == SK_P2PMESH ? "p2pmesh" : "socketio";
#define US(v) ((double)(v) / 1000.0)
    if (O.json) {
        printf("{\"mode\":\"chat\",\"server\":\"%s\",\"conns\":%d,\"rooms\":%d,"
               "\"room_size\":%d,\"senders\":%d,\"senders_per_room\":%d,"
               "\"loop\":\"%s\",\"rate_target\":%.0f,\"window\":%d,"
               "\"duration_s\":%.3f,\"warmup_s\":%.3f,\"body_chars\":%d,"
               "\"frame_bytes\":%zu,"
               "\"sent\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"nacked\":%" PRIu64
               ",\"unacked\":%" PRIu64 ",\"expected_deliveries\":%" PRIu64
               ",\"deliveries\":%" PRIu64 ",\"lost\":%" PRIu64
               ",\"deliveries_per_s\":%.1f,\"acks_per_s\":%.1f,"
               "\"server_cpu_s\":%.3f,\"server_cpu_util\":%.3f,"
               "\"deliveries_per_server_cpu_s\":%.1f,"
               "\"acks_per_server_cpu_s\":%.1f,\"client_cpu_s\":%.3f,"
               "\"client_cpu_util\":%.3f,\"machine_cpu_s\":%.3f,"
               "\"other_cpu_s\":%.3f,\"server_rss_kb\":%ld,",
               sn, nconns, nrooms, O.room_size, nsenders, spr,
               O.rate > 0 ? "open" : "closed", O.rate, O.window, win, O.warmup,
               O.size, last_frame_len, sent_win, acks_win, nacks_win, unacked,
               expected_win, deliv_win, lost, dps, aps, srv,
               srv >= 0 && win > 0 ? srv / win : -1, d_cpu, a_cpu, cli,
               win > 0 ? cli / win : 0, mach, other, srv_rss1);
        printf("\"latency_us\":{\"n\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,"
               "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},"
               "\"ack_latency_us\":{\"n\":%" PRIu64 ",\"p50\":%.1f,"
               "\"p90\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
               "\"send_lag_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},",
               h_lat.n, h_lat.n ? US(h_lat.sum / h_lat.n) : 0,
               US(lg_h_pct(&h_lat, 50)), US(lg_h_pct(&h_lat, 90)),
               US(lg_h_pct(&h_lat, 99)), US(lg_h_pct(&h_lat, 99.9)),
               US(h_lat.max), h_ack.n, US(lg_h_pct(&h_ack, 50)),
               US(lg_h_pct(&h_ack, 90)), US(lg_h_pct(&h_ack, 99)),
               US(h_ack.max), US(lg_h_pct(&h_lag, 50)),
               US(lg_h_pct(&h_lag, 99)), US(h_lag.max));
        printf("\"seq_gaps\":%" PRIu64 ",\"seq_dup\":%" PRIu64
               ",\"bad_from\":%" PRIu64 ",\"bad_payload\":%" PRIu64
               ",\"wrong_room\":%" PRIu64 ",\"ack_unknown\":%" PRIu64
               ",\"ring_overflow\":%" PRIu64 ",\"send_dropped\":%" PRIu64
               ",\"server_errors\":%" PRIu64 ",\"server_closes\":%" PRIu64
               ",\"unexpected_eof\":%" PRIu64 ",\"proto_errors\":%" PRIu64
               ",\"masked_frames\":%" PRIu64 ",\"other_msgs\":%" PRIu64
               ",\"pings\":%" PRIu64 ",\"sent_total\":%" PRIu64
               ",\"acked_total\":%" PRIu64 ",\"setup_s\":%.3f,"
               "\"setup_server_cpu_s\":%.3f,\"ok\":%s}\n",
               seq_gaps, seq_dup, bad_from, bad_payload, wrong_room,
               ack_unknown, ring_overflow, send_dropped, server_errors,
               server_closes, unexpected_eof, proto_errors, masked_rx,
               other_msgs, pings_rx, sent_total, acks_ok_total,
               (double)(t_setup_done - t_setup_start) / 1e9,
               setup_cpu0 >= 0 && setup_cpu1 >= 0 ? setup_cpu1 - setup_cpu0
                                                  : -1,
               exit_code == 0 ? "true" : "false");
    } else {
        printf("%s: %d connections, %d rooms of %d, %d senders (%d per room), "
               "%s loop, window %.2f s, body %d chars\n",
               sn, nconns, nrooms, O.room_size, nsenders, spr,
               O.rate > 0 ? "open" : "closed", win, O.size);
        if (O.rate > 0)
            printf("target rate        %.0f msgs/s\n", O.rate);
        else
            printf("window             %d unacked per sender\n", O.window);
        printf("messages           sent %" PRIu64 ", acked %" PRIu64
               ", errors %" PRIu64 ", unacked %" PRIu64 "\n",
               sent_win, acks_win, nacks_win, unacked);
        printf("deliveries         expected %" PRIu64 ", received %" PRIu64
               ", lost %" PRIu64 " (seq gaps %" PRIu64 ", dup %" PRIu64 ")\n",
               expected_win, deliv_win, lost, seq_gaps, seq_dup);
        printf("throughput         %.0f deliveries/s, %.0f acked msgs/s\n", dps,
               aps);
        if (srv >= 0)
            printf("server CPU         %.2f s (%.0f %%): %.0f deliveries and "
                   "%.0f msgs per CPU-s, RSS %ld KiB\n",
                   srv, 100 * srv / win, d_cpu, a_cpu, srv_rss1);
        printf("client CPU         %.2f s (%.0f %%)\n", cli, 100 * cli / win);
        printf("setup              %.2f s, server CPU %.2f s\n",
               (double)(t_setup_done - t_setup_start) / 1e9,
               setup_cpu0 >= 0 && setup_cpu1 >= 0 ? setup_cpu1 - setup_cpu0
                                                  : -1);
        if (mach >= 0)
            printf("other CPU          %.2f s\n", other);
        printf("delivery latency   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  "
               "max %.1f us (n %" PRIu64 ")\n",
               US(lg_h_pct(&h_lat, 50)), US(lg_h_pct(&h_lat, 90)),
               US(lg_h_pct(&h_lat, 99)), US(lg_h_pct(&h_lat, 99.9)),
               US(h_lat.max), h_lat.n);
        printf("ack latency        p50 %.1f  p99 %.1f  max %.1f us\n",
               US(lg_h_pct(&h_ack, 50)), US(lg_h_pct(&h_ack, 99)),
               US(h_ack.max));
        printf("errors             server %" PRIu64 ", closes %" PRIu64
               ", eof %" PRIu64 ", protocol %" PRIu64 ", from %" PRIu64
               ", payload %" PRIu64 ", room %" PRIu64 "\n",
               server_errors, server_closes, unexpected_eof, proto_errors,
               bad_from, bad_payload, wrong_room);
    }
}

/* ------------------------------------------------------------------ */
/* main                                                                */

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: chat-loadgen [options]\n"
        "  --server S          p2pmesh | socketio (default p2pmesh)\n"
        "  --host ADDR         server IPv4 address (default 127.0.0.1)\n"
        "  --port N            server port (default 3000)\n"
        "  --pid PID           server process: CPU (utime+stime) and VmRSS\n"
        "  --conns N           connections (default 1000)\n"
        "  --room-size K       members per room; N must be a multiple "
        "(default 100)\n"
        "  --senders S         senders per room: members 0..S-1 (default 1)\n"
        "  --room-prefix P     rooms are P-0, P-1, ... (default bench)\n"
        "  --rate R            total msgs/s, open loop; 0 = closed loop "
        "(default 0)\n"
        "  --window W          closed loop: unacked messages per sender "
        "(default 1)\n"
        "  --duration S        measured window (default 10)\n"
        "  --warmup S          traffic before the window (default 3)\n"
        "  --drain S           wait for what the window sent (default 5)\n"
        "  --start-delay S     pause between setup and traffic (default 1)\n"
        "  --size CHARS        message body length (default 100)\n"
        "  --jwt-secret S      p2pmesh: the server's jwt.secret (required)\n"
        "  --user-base B       connection i is user id B+i+1, name bu<B+i> "
        "(0)\n"
        "  --src-addrs K       spread connections over 127.0.0.1..K (0 = "
        "auto)\n"
        "  --concurrency N     connections being set up at once (default "
        "128)\n"
        "  --setup-timeout S   give up setting up after S seconds (default "
        "120)\n"
        "  --json              print one JSON line with the results\n"
        "  --allow-remote      allow a non-loopback --host\n"
        "  --verbose           progress on stderr\n");
}

int
main(int argc, char **argv)
{
    lg_progname = "chat-loadgen";
    memset(&O, 0, sizeof O);
    snprintf(O.host, sizeof O.host, "127.0.0.1");
    snprintf(O.prefix, sizeof O.prefix, "bench");
    O.port = 3000;
    O.server = SK_P2PMESH;
    O.conns = 1000;
    O.room_size = 100;
    O.senders = 1;
    O.window = 1;
    O.duration = 10;
    O.warmup = 3;
    O.drain = 5;
    O.start_delay = 1;
    O.size = 100;
    O.concurrency = 128;
    O.setup_timeout = 120;

    enum {
        OPT_SERVER = 1,
        OPT_HOST,
        OPT_PORT,
        OPT_PID,
        OPT_CONNS,
        OPT_ROOMSIZE,
        OPT_SENDERS,
        OPT_PREFIX,
        OPT_RATE,
        OPT_WINDOW,
        OPT_DURATION,
        OPT_WARMUP,
        OPT_DRAIN,
        OPT_STARTDELAY,
        OPT_SIZE,
        OPT_SECRET,
        OPT_USERBASE,
        OPT_SRC,
        OPT_CONC,
        OPT_SETUPTO,
        OPT_JSON,
        OPT_REMOTE,
        OPT_VERBOSE,
        OPT_HELP
    };
    static const struct option lo[] = {
        {"server", required_argument, 0, OPT_SERVER},
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"pid", required_argument, 0, OPT_PID},
        {"conns", required_argument, 0, OPT_CONNS},
        {"room-size", required_argument, 0, OPT_ROOMSIZE},
        {"senders", required_argument, 0, OPT_SENDERS},
        {"room-prefix", required_argument, 0, OPT_PREFIX},
        {"rate", required_argument, 0, OPT_RATE},
        {"window", required_argument, 0, OPT_WINDOW},
        {"duration", required_argument, 0, OPT_DURATION},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"drain", required_argument, 0, OPT_DRAIN},
        {"start-delay", required_argument, 0, OPT_STARTDELAY},
        {"size", required_argument, 0, OPT_SIZE},
        {"jwt-secret", required_argument, 0, OPT_SECRET},
        {"user-base", required_argument, 0, OPT_USERBASE},
        {"src-addrs", required_argument, 0, OPT_SRC},
        {"concurrency", required_argument, 0, OPT_CONC},
        {"setup-timeout", required_argument, 0, OPT_SETUPTO},
        {"json", no_argument, 0, OPT_JSON},
        {"allow-remote", no_argument, 0, OPT_REMOTE},
        {"verbose", no_argument, 0, OPT_VERBOSE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case OPT_SERVER:
            if (strcmp(optarg, "p2pmesh") == 0)
                O.server = SK_P2PMESH;
            else if (strcmp(optarg, "socketio") == 0 ||
                     strcmp(optarg, "socket.io") == 0)
                O.server = SK_SOCKETIO;
            else {
                lg_log("unknown server %s", optarg);
                return 2;
            }
            break;
        case OPT_HOST:
            snprintf(O.host, sizeof O.host, "%s",
                     strcmp(optarg, "localhost") == 0 ? "127.0.0.1" : optarg);
            break;
        case OPT_PORT:
            O.port = (int)lg_parse_num(optarg, "--port");
            break;
        case OPT_PID:
            O.pid = (int)lg_parse_num(optarg, "--pid");
            break;
        case OPT_CONNS:
            O.conns = (int)lg_parse_num(optarg, "--conns");
            break;
        case OPT_ROOMSIZE:
            O.room_size = (int)lg_parse_num(optarg, "--room-size");
            break;
        case OPT_SENDERS:
            O.senders = (int)lg_parse_num(optarg, "--senders");
            break;
        case OPT_PREFIX:
            snprintf(O.prefix, sizeof O.prefix, "%s", optarg);
            break;
        case OPT_RATE:
            O.rate = lg_parse_num(optarg, "--rate");
            break;
        case OPT_WINDOW:
            O.window = (int)lg_parse_num(optarg, "--window");
            break;
        case OPT_DURATION:
            O.duration = lg_parse_num(optarg, "--duration");
            break;
        case OPT_WARMUP:
            O.warmup = lg_parse_num(optarg, "--warmup");
            break;
        case OPT_DRAIN:
            O.drain = lg_parse_num(optarg, "--drain");
            break;
        case OPT_STARTDELAY:
            O.start_delay = lg_parse_num(optarg, "--start-delay");
            break;
        case OPT_SIZE:
            O.size = (int)lg_parse_num(optarg, "--size");
            break;
        case OPT_SECRET:
            snprintf(O.secret, sizeof O.secret, "%s", optarg);
            break;
        case OPT_USERBASE:
            O.user_base = (int)lg_parse_num(optarg, "--user-base");
            break;
        case OPT_SRC:
            O.src_addrs = (int)lg_parse_num(optarg, "--src-addrs");
            break;
        case OPT_CONC:
            O.concurrency = (int)lg_parse_num(optarg, "--concurrency");
            break;
        case OPT_SETUPTO:
            O.setup_timeout = lg_parse_num(optarg, "--setup-timeout");
            break;
        case OPT_JSON:
            O.json = true;
            break;
        case OPT_REMOTE:
            O.allow_remote = true;
            break;
        case OPT_VERBOSE:
            O.verbose = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (O.port <= 0 || O.port > 65535 || O.conns < 1 || O.conns > 19000 ||
        O.room_size < 1 || O.conns % O.room_size != 0 || O.senders < 1 ||
        O.window < 1 || O.window > RING / 2 || O.size < 1 || O.size > 100000 ||
        O.concurrency < 1 || O.duration <= 0 || O.duration > 3600 ||
        O.warmup > 3600 || O.start_delay > 600) {
        lg_log("option out of range (--conns must be a multiple of "
               "--room-size, --window at most %d)",
               RING / 2);
        return 2;
    }
    if (O.server == SK_P2PMESH && O.secret[0] == '\0') {
        lg_log("--server p2pmesh needs --jwt-secret");
        return 2;
    }
    for (const char *s = O.prefix; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) &&
            *s != '-' && *s != '_') {
            lg_log("--room-prefix: a-z, 0-9, - and _ only");
            return 2;
        }
    memset(&dst_addr, 0, sizeof dst_addr);
    dst_addr.sin_family = AF_INET;
    dst_addr.sin_port = htons((uint16_t)O.port);
    if (inet_pton(AF_INET, O.host, &dst_addr.sin_addr) != 1) {
        lg_log("--host must be an IPv4 address: %s", O.host);
        return 2;
    }
    if ((ntohl(dst_addr.sin_addr.s_addr) >> 24) != 127 && !O.allow_remote) {
        lg_log("refusing non-loopback host %s (see --allow-remote)", O.host);
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    nconns = O.conns;
    if ((rlim_t)nconns + 32 > rl.rlim_cur) {
        lg_log("%d connections need more than the fd limit %llu", nconns,
               (unsigned long long)rl.rlim_cur);
        return 2;
    }
    n_src = O.src_addrs > 0 ? O.src_addrs : 1 + nconns / 8000;
    if (n_src > 250)
        n_src = 250;
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    lg_rng_seed();

    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!base) {
        lg_log("event_base_new failed");
        return 1;
    }

    lg_bufs_init((size_t)O.size);
    pad_str = lg_xrealloc(NULL, (size_t)O.size + 1);
    memset(pad_str, 'x', (size_t)O.size);
    pad_str[O.size] = '\0';

    nrooms = nconns / O.room_size;
    spr = O.senders < O.room_size ? O.senders : O.room_size;
    conns = calloc((size_t)nconns, sizeof *conns);
    senders = calloc((size_t)nrooms * (size_t)spr, sizeof *senders);
    if (!conns || !senders) {
        lg_log("out of memory");
        return 1;
    }
    /* senders interleaved by room, so the open-loop round robin visits
     * every room in turn */
    for (int m = 0; m < spr; m++)
        for (int r = 0; r < nrooms; r++)
            senders[nsenders++] = r * O.room_size + m;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->fd = -1;
        c->idx = i;
        c->st = CS_FREE;
        c->room = i / O.room_size;
        c->member = i % O.room_size;
        c->sender = c->member < spr;
        c->next_seq = 1;
        c->exp_seq = lg_xrealloc(NULL, (size_t)spr * sizeof *c->exp_seq);
        for (int k = 0; k < spr; k++)
            c->exp_seq[k] = 1;
        if (c->sender)
            c->sent_at = calloc(RING, sizeof *c->sent_at);
    }

    ev_sched = evtimer_new(base, on_sched, NULL);
    ev_phase = evtimer_new(base, on_phase, NULL);
    ev_tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    ev_deadline = evtimer_new(base, on_deadline, NULL);
    ev_sigint = evsignal_new(base, SIGINT, on_sigint, NULL);
    event_add(ev_sigint, NULL);
    struct timeval tick = {0, 100000};
    event_add(ev_tick, &tick);
    double total =
        O.setup_timeout + O.start_delay + O.warmup + O.duration + O.drain + 30;
    struct timeval dl = {(time_t)total, 0};
    event_add(ev_deadline, &dl);

    t_base = lg_mono_ns();
    t_meas0 = t_meas1 = UINT64_MAX;
    t_setup_start = lg_mono_ns();
    setup_cpu0 = lg_proc_cpu(O.pid);
    setup_progress();
    if (phase != PH_DONE)
        event_base_dispatch(base);

    if (t_acct1) {
        if (deliv_win == 0 && exit_code == 0) {
            lg_log("no message was delivered");
            exit_code = 3;
        }
        report();
    } else {
        lg_log("no measurement (setup failed or interrupted)");
        if (exit_code == 0)
            exit_code = 1;
    }
    fflush(stdout);

    for (int i = 0; i < nconns; i++) {
        conns[i].closing = true;
        conn_finish(&conns[i]);
        free(conns[i].exp_seq);
        free(conns[i].sent_at);
    }
    if (server_errors || server_closes || unexpected_eof || proto_errors ||
        bad_from || bad_payload || wrong_room || seq_gaps || seq_dup)
        lg_log("problems: %" PRIu64 " server errors, %" PRIu64
               " server closes, %" PRIu64 " unexpected eof, %" PRIu64
               " protocol errors, %" PRIu64 " wrong sender, %" PRIu64
               " bad payload, %" PRIu64 " wrong room, %" PRIu64
               " seq gaps, %" PRIu64 " duplicates",
               server_errors, server_closes, unexpected_eof, proto_errors,
               bad_from, bad_payload, wrong_room, seq_gaps, seq_dup);
    event_free(ev_sched);
    event_free(ev_phase);
    event_free(ev_tick);
    event_free(ev_deadline);
    event_free(ev_sigint);
    free(conns);
    free(senders);
    lg_bufs_free();
    free(pad_str);
    event_base_free(base);
    return exit_code;
}
