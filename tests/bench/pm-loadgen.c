/*
 * pm-loadgen: WebSocket relay load generator for p2pmesh and its peers.
 *
 * One thread, one libevent event_base. Opens N relay PAIRS of WebSocket
 * connections (client side of RFC 6455, written here from the RFC) and
 * relays messages A -> server -> B and B -> server -> A:
 *
 *   open loop  (--rate R > 0): a timer sends messages at their intended
 *              times t0 + k/R, round robin over all 2N senders; latency is
 *              measured from the INTENDED send time to receipt, so a slow
 *              server (or a slow client) cannot hide queueing delay
 *              (no coordinated omission).
 *   closed loop (--rate 0): each pair keeps --window messages in flight;
 *              every receipt sends the next one back (max throughput).
 *   idle       (--idle N): open N upgraded (and joined) connections, hold
 *              them, report the server's RSS before and after.
 *
 * Each message carries its sequence number and intended send time
 * (CLOCK_MONOTONIC ns since the generator started) in the JSON payload;
 * the receiver finds them with a plain string scan.
 *
 * Dialects: p2pmesh ({"type":"join"} / "signal" with "to", "from" added),
 * peerjs (/peerjs?key=&id=&token=, "OFFER" with "dst", "src" added) and
 * ywebrtc (the y-webrtc signaling protocol, below).
 *
 * ywebrtc: both connections of a pair subscribe to the pair's own topic
 * ("<room>-<A's id>") and send {"type":"ping"}; the pong (answered after
 * the subscribe, in order) marks the connection ready. A message is
 *   {"type":"publish","topic":T,"data":{"type":"signal","from":ME,
 *    "to":PARTNER,"signal":{"seq":N,"t":NS,"pad":"..."}}}
 * the shape of a real y-webrtc client's signal. The server delivers it to
 * every subscriber of T, so the partner gets it (the RELAYED message,
 * counted, timed and bounced exactly like the other dialects' relays) and
 * the sender gets it back too (the ECHO: recognised by "from" == own id,
 * read, checked for order and counted separately as echoes, never as
 * relayed messages and never bounced). So "relayed messages" mean the same
 * in every dialect: one message from one peer reaching the other; what the
 * y-webrtc protocol costs beyond that (one more frame out per relay) is
 * the server's to carry. Closed loop: a message is in flight from its
 * publish until the PARTNER has it (the echo does not release the window).
 * Open loop: the schedule is the same as in the other dialects (each
 * scheduled message is one publish). Every delivery must carry the
 * "clients" field the protocol adds (missing_clients counts the others).
 *
 * Two servers (--port-b): the B side of every pair (odd connections)
 * connects to --port-b instead of --port, so every relayed message
 * crosses from one server instance to the other (cluster mode through
 * Redis). --pid-b adds the second server's CPU to the server CPU;
 * --aux-pid reports one more process (Redis) separately, and subtracts it
 * from the "other work" figure. --start-delay holds traffic back after
 * setup (cluster instances learn of remote joins and topic interest
 * asynchronously).
 *
 * Build: cc -O2 -o pm-loadgen pm-loadgen.c \
 *            $(pkg-config --cflags --libs libevent openssl)
 * (only libcrypto is used: random bytes, SHA-1 and base64.)
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

/* ------------------------------------------------------------------ */
/* options and global state                                            */

enum dialect { D_P2PMESH, D_PEERJS, D_YWEBRTC };
enum cstate {
    CS_FREE,
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_JOINING,
    CS_READY,
    CS_CLOSED
};
enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_SETTLE, PH_DONE };

struct opts {
    char host[64];
    int port;
    int port_b; /* >0: odd connections (B sides) connect here */
    enum dialect dialect;
    int pairs;
    double rate;     /* total msgs/s, 0 = closed loop */
    int window;      /* closed loop: messages in flight per pair */
    double duration; /* measured window, s */
    double warmup;   /* s */
    int size;        /* pad bytes */
    int pid;         /* server pid, 0 = none */
    int pid_b;       /* second server (--port-b), CPU added to the server's */
    int aux_pid;     /* one more process (Redis) reported separately */
    double start_delay; /* s between setup done and the first message */
    int idle;           /* idle mode: connections, 0 = relay mode */
    bool idle_join;     /* idle: join (p2pmesh) after upgrade */
    double settle;      /* idle: seconds to hold before the RSS reading */
    bool json;
    char room[64];
    int room_size;   /* >0: connection i joins room "<room>-<i/room_size>" */
    char path[128];  /* path prefix for peerjs (default "/") */
    int src_addrs;   /* 0 = auto */
    int concurrency; /* setup: connections in progress at once */
    double setup_timeout;
    double join_timeout;
    double drain; /* s to wait for in-flight messages at the end */
    bool allow_remote;
    bool verbose;
    bool spin; /* poll instead of sleeping (no timer wake-up lag) */
};

struct conn {
    int fd;
    int idx;
    int partner; /* conn index, -1 in idle mode */
    enum cstate st;
    struct event rev, wev;
    bool rev_on, wev_on;
    /* bytes read but not yet parsed (partial frame or HTTP head) */
    uint8_t *in;
    size_t in_len, in_cap;
    /* queued output */
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    /* fragmented message reassembly */
    uint8_t *frag;
    size_t frag_len, frag_cap;
    uint8_t frag_op;
    char id[48];
    char key[32];
    char *prefix; /* message up to and including "seq": */
    size_t prefix_len;
    uint64_t next_seq, expect_seq;
    uint64_t echo_seq; /* ywebrtc: next own sequence number echoed */
    uint64_t t_phase;  /* when the current setup state began */
    bool closing;      /* we sent close */
};

static struct opts O;
static struct event_base *base;
static struct conn *conns;
static int nconns;
static struct sockaddr_in dst_addr, dst_addr_b;
static int n_src;

static enum phase phase = PH_SETUP;
static uint64_t t_base;           /* generator start, mono ns */
static uint64_t t_run0;           /* first scheduled send */
static uint64_t t_meas0, t_meas1; /* measured window (intended times) */
static uint64_t t_setup_done;

/* setup progress */
static int next_connect, in_setup, n_ready, n_failed, n_join_unacked;
static uint64_t t_setup_start;

/* traffic counters */
static uint64_t sent_total, recv_total;
static uint64_t sent_win, recv_win; /* by intended time inside window */
static uint64_t recv_during_win;    /* by receive time inside window */
static uint64_t send_dropped;       /* queue over cap or conn closed */
static uint64_t seq_gaps, seq_old, bad_from, bad_payload;
static uint64_t other_msgs, server_errors, server_closes, pings_rx;
static uint64_t unexpected_eof, proto_errors;
static uint64_t masked_rx; /* server frames that were masked (a violation) */
/* ywebrtc: the sender's own copy of each publish */
static uint64_t echoes_total, echo_win, echo_seq_bad, missing_clients;
static int errs_printed;

/* open loop scheduler */
static uint64_t sched_k; /* next message index */
static double sched_interval_ns;
static struct event *ev_sched, *ev_phase, *ev_tick, *ev_hb, *ev_deadline,
    *ev_sigint;

/* accounting snapshots */
static double srv_cpu0 = -1, srv_cpu1 = -1;
static double srvb_cpu0 = -1, srvb_cpu1 = -1;
static double aux_cpu0 = -1, aux_cpu1 = -1;
static long srvb_rss1 = -1;
static long srv_rss0 = -1, srv_rss1 = -1, srv_rss_max = -1;
static double cli_cpu0, cli_cpu1;
static double mach_cpu0 = -1, mach_cpu1 = -1;
static uint64_t t_acct0, t_acct1;

static struct lg_hist h_lat, h_lag;
/* worst latency per 10 ms slot of intended send time in the window, to
 * locate stalls (a server pause shows as a run of slow slots) */
static uint32_t *slot_max_us;
static size_t n_slots;
#define SLOT_NS 10000000ull
#define STALL_US 10000u /* slots worse than 10 ms are listed */

static char *pad_str;
static size_t last_msg_len; /* payload bytes of the last relay message */

static int exit_code;
/* while a connection's input is parsed, its own sends are queued and leave
 * in one send() afterwards (pipelined windows coalesce) */
static struct conn *corked;

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static void
rand_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    static const char hx[] = "0123456789abcdef";
    if (nbytes > sizeof raw)
        nbytes = sizeof raw;
    if (RAND_bytes(raw, (int)nbytes) != 1) {
        for (size_t i = 0; i < nbytes; i++)
            raw[i] = (unsigned char)lg_rng32();
    }
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hx[raw[i] >> 4];
        out[2 * i + 1] = hx[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

/* ------------------------------------------------------------------ */
/* connection I/O                                                      */

static void conn_close(struct conn *c, bool failed);
static void setup_progress(void);

static void on_write(evutil_socket_t fd, short what, void *arg);

/* Send bytes now if nothing is queued; queue the rest (EV_WRITE). */
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
                if (O.verbose)
                    lg_log("conn %d: send: %s", c->idx, strerror(errno));
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
    bool was_setup =
        c->st == CS_CONNECTING || c->st == CS_HANDSHAKE || c->st == CS_JOINING;
    bool was_ready = c->st == CS_READY;
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
    } else if (was_ready) {
        n_ready--;
    }
}

/* Politely close: close frame 1000, then the socket. */
static void
conn_finish(struct conn *c)
{
    if (c->st == CS_READY || c->st == CS_JOINING) {
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
        if (c->out_cap > 65536) { /* give big queues back */
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
/* relay messages                                                      */

/* ywebrtc topic of a connection: the pair's own ("<room>-<A's id>") in
 * relay mode; in idle mode "<room>" or "<room>-<i / room_size>". */
static void
topic_of(const struct conn *c, char *out, size_t n)
{
    if (!O.idle)
        snprintf(out, n, "%s-%s", O.room, conns[c->idx & ~1].id);
    else if (O.room_size > 0)
        snprintf(out, n, "%s-%d", O.room, c->idx / O.room_size);
    else
        snprintf(out, n, "%s", O.room);
}

static void
build_prefix(struct conn *c)
{
    const struct conn *p = &conns[c->partner];
    char buf[384], topic[128];
    int n;
    if (O.dialect == D_P2PMESH)
        n = snprintf(
            buf, sizeof buf,
            "{\"type\":\"signal\",\"to\":\"%s\",\"signal\":{\"seq\":", p->id);
    else if (O.dialect == D_YWEBRTC) {
        topic_of(c, topic, sizeof topic);
        n = snprintf(buf, sizeof buf,
                     "{\"type\":\"publish\",\"topic\":\"%s\",\"data\":{"
                     "\"type\":\"signal\",\"from\":\"%s\",\"to\":\"%s\","
                     "\"signal\":{\"seq\":",
                     topic, c->id, p->id);
    } else
        n = snprintf(
            buf, sizeof buf,
            "{\"type\":\"OFFER\",\"dst\":\"%s\",\"payload\":{\"seq\":", p->id);
    c->prefix = strdup(buf);
    c->prefix_len = (size_t)n;
}

/* Send the next relay message from c to its partner, intended at t_int. */
static void
send_relay(struct conn *c, uint64_t t_int)
{
    bool in_win = t_int >= t_meas0 && t_int < t_meas1;
    if (c->st != CS_READY) {
        send_dropped++;
        return;
    }
    size_t padn = (size_t)O.size;
    uint8_t *pl = lg_frame_slot(c->prefix_len + 72 + padn);
    size_t n = 0;
    memcpy(pl, c->prefix, c->prefix_len);
    n += c->prefix_len;
    n += lg_fmt_u64((char *)pl + n, c->next_seq);
    memcpy(pl + n, ",\"t\":", 5);
    n += 5;
    n += lg_fmt_u64((char *)pl + n, t_int - t_base);
    memcpy(pl + n, ",\"pad\":\"", 8);
    n += 8;
    memcpy(pl + n, pad_str, padn);
    n += padn;
    memcpy(pl + n, "\"}}}", 4);
    n += O.dialect == D_YWEBRTC ? 4 : 3; /* ywebrtc: signal in data */
    c->next_seq++;
    last_msg_len = n;
    if (!ws_send_slot(c, 0x1, n)) {
        return;
    }
    sent_total++;
    if (in_win)
        sent_win++;
}

/* Parse an unsigned integer after `"key"` + optional spaces + ':' */
static bool
scan_u64(const uint8_t *d, size_t len, const char *key, size_t klen,
         uint64_t *out)
{
    const uint8_t *p = memmem(d, len, key, klen);
    if (!p)
        return false;
    const uint8_t *e = d + len;
    p += klen;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p >= e || *p != ':')
        return false;
    p++;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p >= e || !isdigit(*p))
        return false;
    uint64_t v = 0;
    int nd = 0;
    while (p < e && isdigit(*p) && nd < 20) {
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
        nd++;
    }
    /* a double printed with a fraction or exponent: take the integer part
     * only if exact (".0"); anything else is treated as corrupt */
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E'))
        return false;
    *out = v;
    return true;
}

/* Does "from" (p2pmesh: added by the server; ywebrtc: ours, inside data)
 * or "src" (peerjs) name `want`? */
static bool
sender_is(const uint8_t *d, size_t len, const char *want)
{
    const char *key = O.dialect == D_PEERJS ? "\"src\"" : "\"from\"";
    size_t klen = strlen(key);
    const uint8_t *p = memmem(d, len, key, klen);
    if (!p)
        return false;
    const uint8_t *e = d + len;
    p += klen;
    while (p < e && (*p == ' ' || *p == ':'))
        p++;
    if (p >= e || *p != '"')
        return false;
    p++;
    size_t wl = strlen(want);
    return (size_t)(e - p) > wl && memcmp(p, want, wl) == 0 && p[wl] == '"';
}

/* Check "from"/"src" names the partner. */
static bool
check_sender(const struct conn *c, const uint8_t *d, size_t len)
{
    return sender_is(d, len, conns[c->partner].id);
}

/* ywebrtc: the sender's own publish coming back (every subscriber gets
 * it). Counted and checked, never relayed, never bounced. */
static void
echo_received(struct conn *c, uint64_t seq, uint64_t t)
{
    if (seq != c->echo_seq)
        echo_seq_bad++;
    if (seq >= c->echo_seq)
        c->echo_seq = seq + 1;
    echoes_total++;
    uint64_t t_int = t + t_base;
    if (t_int >= t_meas0 && t_int < t_meas1)
        echo_win++;
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

static void
relay_received(struct conn *c, const uint8_t *d, size_t len)
{
    uint64_t now = lg_mono_ns();
    uint64_t seq, t;
    if (!scan_u64(d, len, "\"seq\"", 5, &seq) ||
        !scan_u64(d, len, "\"t\"", 3, &t)) {
        bad_payload++;
        if (bad_payload <= 3)
            lg_log("conn %d: unparsable relay message: %.*s", c->idx,
                   (int)(len > 200 ? 200 : len), (const char *)d);
        return;
    }
    if (O.dialect == D_YWEBRTC) {
        if (!memmem(d, len, "\"clients\"", 9))
            missing_clients++;
        if (sender_is(d, len, c->id)) {
            echo_received(c, seq, t);
            return;
        }
    }
    if (!check_sender(c, d, len)) {
        bad_from++;
        if (bad_from <= 3)
            lg_log("conn %d: wrong or missing sender: %.*s", c->idx,
                   (int)(len > 200 ? 200 : len), (const char *)d);
    }
    if (seq != c->expect_seq) {
        if (seq > c->expect_seq)
            seq_gaps += seq - c->expect_seq;
        else
            seq_old++;
    }
    if (seq >= c->expect_seq)
        c->expect_seq = seq + 1;
    recv_total++;
    uint64_t t_int = t + t_base;
    if (t_int >= t_meas0 && t_int < t_meas1) {
        uint64_t lat = now > t_int ? now - t_int : 0;
        recv_win++;
        lg_h_add(&h_lat, lat);
        size_t slot = (size_t)((t_int - t_meas0) / SLOT_NS);
        uint64_t us = lat / 1000;
        if (slot < n_slots && us > slot_max_us[slot])
            slot_max_us[slot] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    if (phase == PH_MEASURE) /* the CPU sampling window */
        recv_during_win++;
    /* closed loop: bounce the token back */
    if (O.rate <= 0 && (phase == PH_WARMUP || phase == PH_MEASURE))
        send_relay(c, now);
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
handle_message(struct conn *c, const uint8_t *d, size_t len)
{
    if (c->st == CS_READY && memmem(d, len, "\"seq\"", 5)) {
        relay_received(c, d, len);
        return;
    }
    /* everything else: control traffic of the dialect */
    /* either dialect's error shapes, whatever dialect we speak: a server
     * that answers in the wrong dialect is reported, not ignored */
    bool is_err =
        memmem(d, len, "\"error\"", 7) || memmem(d, len, "\"ERROR\"", 7) ||
        memmem(d, len, "\"ID-TAKEN\"", 10) || memmem(d, len, "\"EXPIRE\"", 8) ||
        memmem(d, len, "\"LEAVE\"", 7);
    if (is_err) {
        note_server_error(c, d, len);
        return;
    }
    if (c->st == CS_JOINING) {
        if ((O.dialect == D_P2PMESH &&
             memmem(d, len, "\"bootstrap_peers\"", 17)) ||
            (O.dialect == D_PEERJS && memmem(d, len, "\"OPEN\"", 6)) ||
            (O.dialect == D_YWEBRTC && memmem(d, len, "\"pong\"", 6))) {
            conn_ready(c);
            return;
        }
    }
    other_msgs++;
}

/* Returns false if the connection was closed. */
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
    case 0x9: /* ping -> pong with the same payload */
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
            uint8_t cl[2] = {d[0], d[1]};
            if (len >= 2)
                ws_send(c, 0x8, cl, 2);
            else
                ws_send(c, 0x8, NULL, 0);
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

/* Parse complete frames from p[0..n); returns bytes consumed. */
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

static void
send_join(struct conn *c)
{
    char buf[256], topic[128];
    if (O.dialect == D_YWEBRTC) {
        /* subscribe, then ping: the pong says the subscribe is done */
        topic_of(c, topic, sizeof topic);
        snprintf(buf, sizeof buf,
                 "{\"type\":\"subscribe\",\"topics\":[\"%s\"]}", topic);
        ws_send_text(c, buf);
        ws_send_text(c, "{\"type\":\"ping\"}");
        return;
    }
    snprintf(buf, sizeof buf, "{\"type\":\"join\",\"peerId\":\"%s\"}", c->id);
    ws_send_text(c, buf);
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
        on_write(c->fd, EV_WRITE, c); /* flush what parsing queued */
}

static void
on_read_body(evutil_socket_t fd, struct conn *c)
{
    for (int iter = 0; iter < 8; iter++) {
        /* leftovers first, then fresh bytes after them */
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
            if (hl == 0) {
                off = 0;
                goto keep;
            }
            off = (size_t)hl;
            if ((O.dialect == D_P2PMESH || O.dialect == D_YWEBRTC) &&
                (O.idle == 0 || O.idle_join)) {
                c->st = CS_JOINING;
                c->t_phase = lg_mono_ns();
                send_join(c);
            } else if (O.dialect == D_PEERJS) {
                c->st = CS_JOINING; /* until OPEN */
                c->t_phase = lg_mono_ns();
            } else {
                conn_ready(c);
            }
            if (c->st == CS_CLOSED)
                return;
        }
        off += parse_frames(c, lg_scratch + off, n - off);
        if (c->st == CS_CLOSED)
            return;
    keep:
        lg_keep_input(&c->in, &c->in_len, &c->in_cap, lg_scratch + off,
                      n - off);
        if ((size_t)r < room)
            return; /* drained the socket */
    }
}

/* ------------------------------------------------------------------ */
/* connection setup                                                    */

/* With --port-b the B side of each pair (odd connections; in idle mode
 * every other connection) talks to the second server. */
static bool
on_port_b(const struct conn *c)
{
    return O.port_b > 0 && (c->idx & 1);
}

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
    /* from now on EV_WRITE drains the output queue */
    event_assign(&c->wev, base, c->fd, EV_WRITE, on_write, c);
    event_assign(&c->rev, base, c->fd, EV_READ | EV_PERSIST, on_read, c);
    event_add(&c->rev, NULL);
    c->rev_on = true;

    char req[512];
    int n;
    int port = on_port_b(c) ? O.port_b : O.port;
    if (O.dialect == D_P2PMESH) {
        char room[96];
        if (O.room_size > 0)
            snprintf(room, sizeof room, "%s-%d", O.room, c->idx / O.room_size);
        else
            snprintf(room, sizeof room, "%s", O.room);
        n = snprintf(req, sizeof req,
                     "GET /?room=%s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n" LG_WS_UPGRADE_HEADERS,
                     room, O.host, port, c->key);
    } else if (O.dialect == D_YWEBRTC) {
        n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: %s:%d\r\n" LG_WS_UPGRADE_HEADERS,
                     O.host, port, c->key);
    } else {
        char tok[24];
        rand_hex(tok, 8);
        n = snprintf(req, sizeof req,
                     "GET %speerjs?key=peerjs&id=%s&token=%s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n" LG_WS_UPGRADE_HEADERS,
                     O.path, c->id, tok, O.host, port, c->key);
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
    const struct sockaddr_in *dst = on_port_b(c) ? &dst_addr_b : &dst_addr;
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 &&
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
static void idle_all_open(void);

/* Launch more connections; notice when setup is complete. */
static void
setup_progress(void)
{
    static bool busy;
    if (busy) /* re-entered from a close or ready below: the outer call
               * keeps launching and checks completion */
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
        if (O.idle)
            idle_all_open();
        else
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

/* Send every message that is due; returns the next intended time
 * (UINT64_MAX when the schedule is over). */
static uint64_t
sched_run(void)
{
    if (phase != PH_WARMUP && phase != PH_MEASURE)
        return UINT64_MAX;
    uint64_t now = lg_mono_ns();
    int senders = 2 * O.pairs;
    int budget = 20000; /* bound one callback; the rest follows at once */
    while (budget-- > 0) {
        uint64_t t_int =
            t_run0 + (uint64_t)((double)sched_k * sched_interval_ns);
        if (t_int > now || t_int >= t_meas1)
            break;
        struct conn *c = &conns[sched_k % (uint64_t)senders];
        if (t_int >= t_meas0)
            lg_h_add(&h_lag, now - t_int);
        send_relay(c, t_int);
        sched_k++;
    }
    uint64_t next = t_run0 + (uint64_t)((double)sched_k * sched_interval_ns);
    return next >= t_meas1 ? UINT64_MAX : next;
}

static void closed_loop_kick(void);

static void
on_sched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (O.rate <= 0) {
        if (phase == PH_WARMUP || phase == PH_MEASURE) /* warmup may be 0 */
            closed_loop_kick();
        return;
    }
    uint64_t next = sched_run();
    if (next == UINT64_MAX || O.spin)
        return; /* the phase timer ends the run */
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
        srvb_cpu0 = lg_proc_cpu(O.pid_b);
        aux_cpu0 = lg_proc_cpu(O.aux_pid);
        cli_cpu0 = lg_cpu_self();
        mach_cpu0 = lg_machine_busy();
        arm_phase_timer(t_meas1);
    } else if (phase == PH_MEASURE) {
        t_acct1 = lg_mono_ns();
        srv_cpu1 = lg_proc_cpu(O.pid);
        srvb_cpu1 = lg_proc_cpu(O.pid_b);
        aux_cpu1 = lg_proc_cpu(O.aux_pid);
        cli_cpu1 = lg_cpu_self();
        mach_cpu1 = lg_machine_busy();
        srv_rss1 = lg_proc_rss_kb(O.pid);
        srvb_rss1 = lg_proc_rss_kb(O.pid_b);
        phase = PH_DRAIN;
        arm_phase_timer(t_acct1 + (uint64_t)(O.drain * 1e9));
    } else if (phase == PH_DRAIN) {
        finish();
    } else if (phase == PH_SETTLE) {
        finish();
    }
}

/* 100 ms housekeeping: setup deadline, join timeouts, drain done, RSS. */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = lg_mono_ns();
    if (phase == PH_SETUP) {
        uint64_t jt = (uint64_t)(O.join_timeout * 1e9);
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            if (c->st == CS_JOINING && now - c->t_phase > jt) {
                /* first peer of an empty room may get no bootstrap list
                 * from some servers; accept it after join_timeout */
                n_join_unacked++;
                conn_ready(c);
                if (phase != PH_SETUP)
                    break;
            }
        }
        if (phase == PH_SETUP &&
            now - t_setup_start > (uint64_t)(O.setup_timeout * 1e9)) {
            lg_log("setup timed out: %d ready, %d failed, %d in progress of %d",
                   n_ready, n_failed, in_setup, nconns);
            if (O.idle) {
                /* report what we have */
                for (int i = 0; i < nconns; i++)
                    if (conns[i].st != CS_READY)
                        conn_close(&conns[i], true);
                next_connect = nconns;
                in_setup = 0;
                setup_progress();
            } else {
                exit_code = 1;
                finish();
            }
        }
    } else if (phase == PH_DRAIN) {
        if (recv_win >= sent_win &&
            (O.dialect != D_YWEBRTC || echo_win >= sent_win))
            finish();
    } else if (phase == PH_SETTLE) {
        long r = lg_proc_rss_kb(O.pid);
        if (r > srv_rss_max)
            srv_rss_max = r;
    }
}

static void
on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (int i = 0; i < nconns; i++)
        if (conns[i].st == CS_READY || conns[i].st == CS_JOINING)
            ws_send_text(&conns[i], "{\"type\":\"HEARTBEAT\"}");
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
    for (int i = 0; i < nconns; i++)
        build_prefix(&conns[i]);
    uint64_t now = lg_mono_ns();
    t_run0 = now + (uint64_t)(O.start_delay * 1e9); /* default 20 ms */
    t_meas0 = t_run0 + (uint64_t)(O.warmup * 1e9);
    t_meas1 = t_meas0 + (uint64_t)(O.duration * 1e9);
    n_slots = (size_t)((t_meas1 - t_meas0) / SLOT_NS) + 1;
    slot_max_us = calloc(n_slots, sizeof *slot_max_us);
    if (!slot_max_us)
        n_slots = 0;
    phase = PH_WARMUP;
    if (O.verbose)
        lg_log("all %d connections ready in %.2f s (%d join unacked)", nconns,
               (double)(t_setup_done - t_setup_start) / 1e9, n_join_unacked);
    arm_phase_timer(t_meas0);
    /* the schedule (open loop) or the first tokens (closed loop) start at
     * t_run0; with --spin the loop polls the schedule itself */
    if (O.rate > 0) {
        sched_interval_ns = 1e9 / O.rate;
        sched_k = 0;
    }
    uint64_t d = t_run0 > now ? t_run0 - now : 0;
    struct timeval tv = {(time_t)(d / 1000000000ull),
                         (suseconds_t)((d % 1000000000ull) / 1000)};
    event_add(ev_sched, &tv);
}

/* closed loop: A of each pair starts `window` tokens */
static void
closed_loop_kick(void)
{
    for (int p = 0; p < O.pairs; p++)
        for (int w = 0; w < O.window; w++)
            send_relay(&conns[2 * p], lg_mono_ns());
}

static void
idle_all_open(void)
{
    phase = PH_SETTLE;
    if (O.verbose)
        lg_log("%d of %d idle connections open in %.2f s", n_ready, nconns,
               (double)(t_setup_done - t_setup_start) / 1e9);
    arm_phase_timer(lg_mono_ns() + (uint64_t)(O.settle * 1e9));
}

/* ------------------------------------------------------------------ */
/* report                                                              */

static const char *
dialect_name(void)
{
    return O.dialect == D_P2PMESH  ? "p2pmesh"
           : O.dialect == D_PEERJS ? "peerjs"
                                   : "ywebrtc";
}

/* Stalls: runs of 10 ms slots whose worst latency passed STALL_US, as
 * [start ms into the window, length ms, worst latency ms], at most 20. */
static void
print_stalls(FILE *f, bool json)
{
    int printed = 0;
    size_t i = 0;
    if (json)
        fputs("[", f);
    while (i < n_slots && printed < 20) {
        if (slot_max_us[i] <= STALL_US) {
            i++;
            continue;
        }
        size_t j = i;
        uint32_t worst = 0;
        while (j < n_slots && slot_max_us[j] > STALL_US) {
            if (slot_max_us[j] > worst)
                worst = slot_max_us[j];
            j++;
        }
        if (json)
            fprintf(f, "%s[%zu,%zu,%.1f]", printed ? "," : "", i * 10,
                    (j - i) * 10, worst / 1000.0);
        else
            fprintf(f, "  at %zu ms for %zu ms: worst %.1f ms\n", i * 10,
                    (j - i) * 10, worst / 1000.0);
        printed++;
        i = j;
    }
    if (json)
        fputs("]", f);
}

static void
report_relay(void)
{
    double win = (double)(t_acct1 - t_acct0) / 1e9;
    double srv_a = srv_cpu0 >= 0 && srv_cpu1 >= 0 ? srv_cpu1 - srv_cpu0 : -1;
    double srv_b =
        srvb_cpu0 >= 0 && srvb_cpu1 >= 0 ? srvb_cpu1 - srvb_cpu0 : -1;
    double aux = aux_cpu0 >= 0 && aux_cpu1 >= 0 ? aux_cpu1 - aux_cpu0 : -1;
    /* server CPU: both servers when there are two */
    double srv = srv_a;
    if (O.pid_b > 0)
        srv = srv_a >= 0 && srv_b >= 0 ? srv_a + srv_b : -1;
    double cli = cli_cpu1 - cli_cpu0;
    double rate = win > 0 ? (double)recv_during_win / win : 0;
    double per_cpu = srv > 0 ? (double)recv_during_win / srv : -1;
    uint64_t lost = sent_win > recv_win ? sent_win - recv_win : 0;
    uint64_t echo_lost =
        O.dialect == D_YWEBRTC && sent_win > echo_win ? sent_win - echo_win : 0;
    double mach = mach_cpu0 >= 0 && mach_cpu1 >= 0 ? mach_cpu1 - mach_cpu0 : -1;
    /* CPU used by everything else on the machine during the window */
    double other =
        mach >= 0 ? mach - cli - (srv >= 0 ? srv : 0) - (aux >= 0 ? aux : 0)
                  : -1;
    if (other < 0 && mach >= 0)
        other = 0;
    const char *dn = dialect_name();
#define US(v) ((double)(v) / 1000.0)
    if (O.json) {
        printf("{\"mode\":\"relay\",\"dialect\":\"%s\",\"pairs\":%d,"
               "\"rate_target\":%.0f,\"loop\":\"%s\",\"window\":%d,"
               "\"duration_s\":%.3f,\"warmup_s\":%.3f,\"size\":%d,"
               "\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"lost\":%" PRIu64
               ",\"send_dropped\":%" PRIu64 ",\"seq_gaps\":%" PRIu64
               ",\"seq_old\":%" PRIu64 ",\"bad_from\":%" PRIu64
               ",\"bad_payload\":%" PRIu64 ",\"server_errors\":%" PRIu64
               ",\"server_closes\":%" PRIu64 ",\"unexpected_eof\":%" PRIu64
               ",\"proto_errors\":%" PRIu64 ",\"masked_frames\":%" PRIu64
               ",\"other_msgs\":%" PRIu64 ",\"pings\":%" PRIu64
               ",\"join_unacked\":%d,"
               "\"msgs_per_s\":%.1f,\"server_cpu_s\":%.3f,"
               "\"server_cpu_util\":%.3f,\"msgs_per_server_cpu_s\":%.1f,"
               "\"client_cpu_s\":%.3f,\"client_cpu_util\":%.3f,"
               "\"machine_cpu_s\":%.3f,\"other_cpu_s\":%.3f,\"spin\":%s,"
               "\"server_rss_kb\":%ld,"
               "\"latency_us\":{\"n\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,"
               "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},"
               "\"send_lag_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
               "\"setup_s\":%.3f,\"ok\":%s,",
               dn, O.pairs, O.rate, O.rate > 0 ? "open" : "closed", O.window,
               win, O.warmup, O.size, sent_win, recv_win, lost, send_dropped,
               seq_gaps, seq_old, bad_from, bad_payload, server_errors,
               server_closes, unexpected_eof, proto_errors, masked_rx,
               other_msgs, pings_rx, n_join_unacked, rate, srv,
               srv >= 0 && win > 0 ? srv / win : -1, per_cpu, cli,
               win > 0 ? cli / win : 0, mach, other, O.spin ? "true" : "false",
               srv_rss1, h_lat.n, h_lat.n ? US(h_lat.sum / h_lat.n) : 0,
               US(lg_h_pct(&h_lat, 50)), US(lg_h_pct(&h_lat, 90)),
               US(lg_h_pct(&h_lat, 99)), US(lg_h_pct(&h_lat, 99.9)),
               US(h_lat.max), US(lg_h_pct(&h_lag, 50)),
               US(lg_h_pct(&h_lag, 99)), US(h_lag.max),
               (double)(t_setup_done - t_setup_start) / 1e9,
               exit_code == 0 ? "true" : "false");
        printf("\"port_b\":%d,\"msg_bytes\":%zu,\"server_a_cpu_s\":%.3f,"
               "\"server_b_cpu_s\":%.3f,\"server_b_rss_kb\":%ld,"
               "\"aux_cpu_s\":%.3f,\"aux_cpu_util\":%.3f,"
               "\"echoes\":%" PRIu64 ",\"echo_lost\":%" PRIu64
               ",\"echo_seq_bad\":%" PRIu64 ",\"missing_clients\":%" PRIu64
               ",\"stalls\":",
               O.port_b, last_msg_len, srv_a, O.pid_b > 0 ? srv_b : -1,
               O.pid_b > 0 ? srvb_rss1 : -1, aux,
               aux >= 0 && win > 0 ? aux / win : -1, echoes_total, echo_lost,
               echo_seq_bad, missing_clients);
        print_stalls(stdout, true);
        fputs("}\n", stdout);
    } else {
        printf("dialect %s, %d pairs, %s loop%s, window %.2f s, pad %d B\n", dn,
               O.pairs, O.rate > 0 ? "open" : "closed", O.rate > 0 ? "" : "",
               win, O.size);
        if (O.rate > 0)
            printf("target rate        %.0f msgs/s\n", O.rate);
        printf("sent/received/lost %" PRIu64 " / %" PRIu64 " / %" PRIu64
               " (send dropped %" PRIu64 ", seq gaps %" PRIu64 ")\n",
               sent_win, recv_win, lost, send_dropped, seq_gaps);
        printf("errors             server %" PRIu64 ", closes %" PRIu64
               ", eof %" PRIu64 ", protocol %" PRIu64 ", bad from %" PRIu64
               ", masked %" PRIu64 "\n",
               server_errors, server_closes, unexpected_eof, proto_errors,
               bad_from, masked_rx);
        printf("throughput         %.0f msgs/s\n", rate);
        if (srv >= 0)
            printf("server CPU         %.2f s (%.0f %%), %.0f msgs per CPU-s, "
                   "RSS %ld KiB\n",
                   srv, 100 * srv / win, per_cpu, srv_rss1);
        if (O.pid_b > 0 && srv_a >= 0 && srv_b >= 0)
            printf("  of which         %.2f s on --pid, %.2f s on --pid-b "
                   "(RSS %ld KiB)\n",
                   srv_a, srv_b, srvb_rss1);
        if (aux >= 0)
            printf("aux process CPU    %.2f s (%.0f %%), not in server CPU\n",
                   aux, 100 * aux / win);
        if (O.dialect == D_YWEBRTC)
            printf("echoes             %" PRIu64 " (lost in window %" PRIu64
                   ", out of order %" PRIu64 "), missing clients %" PRIu64 "\n",
                   echoes_total, echo_lost, echo_seq_bad, missing_clients);
        printf("client CPU         %.2f s (%.0f %%)%s\n", cli, 100 * cli / win,
               O.spin ? " (spinning)" : "");
        if (mach >= 0)
            printf(
                "other CPU          %.2f s on the machine besides server and "
                "client\n",
                other);
        printf("latency us         p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  "
               "max %.1f  (n %" PRIu64 ")\n",
               US(lg_h_pct(&h_lat, 50)), US(lg_h_pct(&h_lat, 90)),
               US(lg_h_pct(&h_lat, 99)), US(lg_h_pct(&h_lat, 99.9)),
               US(h_lat.max), h_lat.n);
        if (O.rate > 0)
            printf("send lag us        p50 %.1f  p99 %.1f  max %.1f\n",
                   US(lg_h_pct(&h_lag, 50)), US(lg_h_pct(&h_lag, 99)),
                   US(h_lag.max));
        printf("stalls (>%u ms, by intended send time):\n", STALL_US / 1000);
        print_stalls(stdout, false);
    }
}

static void
report_idle(void)
{
    const char *dn = dialect_name();
    double per = -1;
    if (srv_rss0 >= 0 && srv_rss1 >= 0 && n_ready > 0)
        per = (double)(srv_rss1 - srv_rss0) * 1024.0 / n_ready;
    double srv = srv_cpu0 >= 0 && srv_cpu1 >= 0 ? srv_cpu1 - srv_cpu0 : -1;
    double setup = (double)(t_setup_done - t_setup_start) / 1e9;
    if (O.json) {
        printf("{\"mode\":\"idle\",\"dialect\":\"%s\",\"joined\":%s,"
               "\"conns\":%d,\"open\":%d,\"failed\":%d,\"join_unacked\":%d,"
               "\"setup_s\":%.3f,\"settle_s\":%.1f,\"src_addrs\":%d,"
               "\"room_size\":%d,"
               "\"server_rss_kb_before\":%ld,\"server_rss_kb_after\":%ld,"
               "\"server_rss_kb_max\":%ld,\"rss_per_conn_bytes\":%.0f,"
               "\"server_cpu_s\":%.3f,\"server_errors\":%" PRIu64
               ",\"server_closes\":%" PRIu64 ",\"unexpected_eof\":%" PRIu64
               ",\"other_msgs\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"ok\":%s}\n",
               dn, (O.dialect == D_PEERJS || O.idle_join) ? "true" : "false",
               nconns, n_ready, n_failed, n_join_unacked, setup, O.settle,
               n_src, O.room_size, srv_rss0, srv_rss1, srv_rss_max, per, srv,
               server_errors, server_closes, unexpected_eof, other_msgs,
               pings_rx,
               exit_code == 0 && n_ready == nconns ? "true" : "false");
    } else {
        printf("idle %s: %d of %d open (%d failed) in %.2f s, held %.1f s\n",
               dn, n_ready, nconns, n_failed, setup, O.settle);
        if (srv_rss0 >= 0)
            printf("server RSS %ld -> %ld KiB (max %ld): %.0f bytes per "
                   "connection\n",
                   srv_rss0, srv_rss1, srv_rss_max, per);
    }
}

/* ------------------------------------------------------------------ */
/* main                                                                */

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: pm-loadgen [options]\n"
        "  --host ADDR        server IPv4 address (default 127.0.0.1; loopback "
        "only)\n"
        "  --port N           server port (default 8080)\n"
        "  --port-b N         B side of every pair (odd connections) on this "
        "port:\n"
        "                     a second server instance (default: none)\n"
        "  --dialect D        p2pmesh | peerjs | ywebrtc (default p2pmesh)\n"
        "  --pairs N          relay pairs (2N connections, default 100)\n"
        "  --rate R           total msgs/s, open loop; 0 = closed loop "
        "(default 0)\n"
        "  --window W         closed loop: messages in flight per pair "
        "(default 1)\n"
        "  --duration S       measured window in seconds (default 10)\n"
        "  --warmup S         seconds of traffic before the window (default "
        "2)\n"
        "  --size BYTES       payload padding (default 200)\n"
        "  --pid PID          server process: CPU (utime+stime) and VmRSS\n"
        "  --pid-b PID        second server (--port-b): its CPU is added to "
        "the\n"
        "                     server CPU\n"
        "  --aux-pid PID      one more process (e.g. Redis): CPU reported "
        "apart\n"
        "  --start-delay S    hold traffic S seconds after setup (default "
        "0.02)\n"
        "  --idle N           idle mode: hold N upgraded connections, report "
        "RSS\n"
        "  --no-join          idle mode: do not send join (p2pmesh) or "
        "subscribe\n"
        "                     (ywebrtc)\n"
        "  --settle S         idle mode: seconds to hold before reading RSS "
        "(5)\n"
        "  --room NAME        p2pmesh room, ywebrtc topic prefix (default "
        "bench)\n"
        "  --room-size K      p2pmesh: K connections per room, rooms NAME-0, "
        "NAME-1..;\n"
        "                     ywebrtc idle mode: K per topic, the same names\n"
        "                     (default 0: everyone in NAME)\n"
        "  --path PREFIX      peerjs path prefix (default /)\n"
        "  --src-addrs K      spread connections over 127.0.0.1..K (0 = auto)\n"
        "  --concurrency N    connections being set up at once (default 256)\n"
        "  --setup-timeout S  give up setting up after S seconds (default 60)\n"
        "  --join-timeout S   accept a join without bootstrap_peers after S "
        "(3)\n"
        "  --drain S          wait for in-flight messages after the window "
        "(3)\n"
        "  --json             print one JSON line with the results\n"
        "  --allow-remote     allow a non-loopback --host (own test hosts "
        "only)\n"
        "  --spin             busy-poll the loop (no timer wake-up lag; the "
        "client\n"
        "                     then shows 100 %% CPU)\n"
        "  --verbose          progress on stderr\n");
}

int
main(int argc, char **argv)
{
    lg_progname = "pm-loadgen";
    memset(&O, 0, sizeof O);
    snprintf(O.host, sizeof O.host, "127.0.0.1");
    O.port = 8080;
    O.start_delay = 0.02;
    O.dialect = D_P2PMESH;
    O.pairs = 100;
    O.window = 1;
    O.duration = 10;
    O.warmup = 2;
    O.size = 200;
    O.idle_join = true;
    O.settle = 5;
    snprintf(O.room, sizeof O.room, "bench");
    snprintf(O.path, sizeof O.path, "/");
    O.concurrency = 256;
    O.setup_timeout = 60;
    O.join_timeout = 3;
    O.drain = 3;

    enum {
        OPT_HOST = 1,
        OPT_PORT,
        OPT_DIALECT,
        OPT_PAIRS,
        OPT_RATE,
        OPT_WINDOW,
        OPT_DURATION,
        OPT_WARMUP,
        OPT_SIZE,
        OPT_PID,
        OPT_IDLE,
        OPT_NOJOIN,
        OPT_SETTLE,
        OPT_ROOM,
        OPT_PATH,
        OPT_SRC,
        OPT_CONC,
        OPT_SETUPTO,
        OPT_JOINTO,
        OPT_DRAIN,
        OPT_JSON,
        OPT_REMOTE,
        OPT_VERBOSE,
        OPT_SPIN,
        OPT_ROOMSIZE,
        OPT_PORTB,
        OPT_PIDB,
        OPT_AUXPID,
        OPT_STARTDELAY,
        OPT_HELP
    };
    static const struct option lo[] = {
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"dialect", required_argument, 0, OPT_DIALECT},
        {"pairs", required_argument, 0, OPT_PAIRS},
        {"rate", required_argument, 0, OPT_RATE},
        {"window", required_argument, 0, OPT_WINDOW},
        {"duration", required_argument, 0, OPT_DURATION},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"size", required_argument, 0, OPT_SIZE},
        {"pid", required_argument, 0, OPT_PID},
        {"idle", required_argument, 0, OPT_IDLE},
        {"no-join", no_argument, 0, OPT_NOJOIN},
        {"settle", required_argument, 0, OPT_SETTLE},
        {"room", required_argument, 0, OPT_ROOM},
        {"room-size", required_argument, 0, OPT_ROOMSIZE},
        {"path", required_argument, 0, OPT_PATH},
        {"src-addrs", required_argument, 0, OPT_SRC},
        {"concurrency", required_argument, 0, OPT_CONC},
        {"setup-timeout", required_argument, 0, OPT_SETUPTO},
        {"join-timeout", required_argument, 0, OPT_JOINTO},
        {"drain", required_argument, 0, OPT_DRAIN},
        {"json", no_argument, 0, OPT_JSON},
        {"allow-remote", no_argument, 0, OPT_REMOTE},
        {"verbose", no_argument, 0, OPT_VERBOSE},
        {"spin", no_argument, 0, OPT_SPIN},
        {"port-b", required_argument, 0, OPT_PORTB},
        {"pid-b", required_argument, 0, OPT_PIDB},
        {"aux-pid", required_argument, 0, OPT_AUXPID},
        {"start-delay", required_argument, 0, OPT_STARTDELAY},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case OPT_HOST:
            snprintf(O.host, sizeof O.host, "%s",
                     strcmp(optarg, "localhost") == 0 ? "127.0.0.1" : optarg);
            break;
        case OPT_PORT:
            O.port = (int)lg_parse_num(optarg, "--port");
            break;
        case OPT_DIALECT:
            if (strcmp(optarg, "p2pmesh") == 0)
                O.dialect = D_P2PMESH;
            else if (strcmp(optarg, "peerjs") == 0)
                O.dialect = D_PEERJS;
            else if (strcmp(optarg, "ywebrtc") == 0 ||
                     strcmp(optarg, "y-webrtc") == 0)
                O.dialect = D_YWEBRTC;
            else {
                lg_log("unknown dialect %s", optarg);
                return 2;
            }
            break;
        case OPT_PAIRS:
            O.pairs = (int)lg_parse_num(optarg, "--pairs");
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
        case OPT_SIZE:
            O.size = (int)lg_parse_num(optarg, "--size");
            break;
        case OPT_PID:
            O.pid = (int)lg_parse_num(optarg, "--pid");
            break;
        case OPT_IDLE:
            O.idle = (int)lg_parse_num(optarg, "--idle");
            break;
        case OPT_NOJOIN:
            O.idle_join = false;
            break;
        case OPT_SETTLE:
            O.settle = lg_parse_num(optarg, "--settle");
            break;
        case OPT_ROOM:
            snprintf(O.room, sizeof O.room, "%s", optarg);
            break;
        case OPT_ROOMSIZE:
            O.room_size = (int)lg_parse_num(optarg, "--room-size");
            break;
        case OPT_PATH:
            snprintf(O.path, sizeof O.path, "%s", optarg);
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
        case OPT_JOINTO:
            O.join_timeout = lg_parse_num(optarg, "--join-timeout");
            break;
        case OPT_DRAIN:
            O.drain = lg_parse_num(optarg, "--drain");
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
        case OPT_SPIN:
            O.spin = true;
            break;
        case OPT_PORTB:
            O.port_b = (int)lg_parse_num(optarg, "--port-b");
            break;
        case OPT_PIDB:
            O.pid_b = (int)lg_parse_num(optarg, "--pid-b");
            break;
        case OPT_AUXPID:
            O.aux_pid = (int)lg_parse_num(optarg, "--aux-pid");
            break;
        case OPT_STARTDELAY:
            O.start_delay = lg_parse_num(optarg, "--start-delay");
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
    if (O.port <= 0 || O.port > 65535 || O.port_b < 0 || O.port_b > 65535 ||
        O.start_delay > 60 || O.window < 1 || O.window > 1000 ||
        O.size > (1 << 20) || O.concurrency < 1 || O.duration <= 0 ||
        O.duration > 3600 || O.warmup > 3600 || O.settle > 3600) {
        lg_log("option out of range");
        return 2;
    }
    if (O.idle == 0 && (O.pairs < 1 || O.pairs > 9000)) {
        lg_log("--pairs must be 1..9000");
        return 2;
    }
    if (O.idle < 0 || O.idle > 100000) {
        lg_log("--idle must be 0..100000");
        return 2;
    }
    for (const char *s = O.room; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_') {
            lg_log("--room: letters, digits, - and _ only");
            return 2;
        }
    memset(&dst_addr, 0, sizeof dst_addr);
    dst_addr.sin_family = AF_INET;
    dst_addr.sin_port = htons((uint16_t)O.port);
    if (inet_pton(AF_INET, O.host, &dst_addr.sin_addr) != 1) {
        lg_log("--host must be an IPv4 address: %s", O.host);
        return 2;
    }
    dst_addr_b = dst_addr;
    dst_addr_b.sin_port = htons((uint16_t)O.port_b);
    if ((ntohl(dst_addr.sin_addr.s_addr) >> 24) != 127 && !O.allow_remote) {
        lg_log("refusing non-loopback host %s (see --allow-remote)", O.host);
        return 2;
    }

    /* fd limit: raise the soft limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    nconns = O.idle ? O.idle : 2 * O.pairs;
    if ((rlim_t)nconns + 32 > rl.rlim_cur) {
        lg_log("%d connections need more than the fd limit %llu", nconns,
               (unsigned long long)rl.rlim_cur);
        return 2;
    }
    n_src = O.src_addrs > 0 ? O.src_addrs : 1 + nconns / 8000;
    if (n_src > 250)
        n_src = 250;
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake at the intended times */

    lg_rng_seed();

    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NO_CACHE_TIME);
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

    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) {
        lg_log("out of memory");
        return 1;
    }
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].idx = i;
        conns[i].st = CS_FREE;
        conns[i].partner = O.idle ? -1 : (i ^ 1);
        rand_hex(conns[i].id, 20); /* 40 hex characters */
    }

    ev_sched = evtimer_new(base, on_sched, NULL);
    ev_phase = evtimer_new(base, on_phase, NULL);
    ev_tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    ev_deadline = evtimer_new(base, on_deadline, NULL);
    ev_sigint = evsignal_new(base, SIGINT, on_sigint, NULL);
    event_add(ev_sigint, NULL);
    struct timeval tick = {0, 100000};
    event_add(ev_tick, &tick);
    if (O.dialect == D_PEERJS) {
        ev_hb = event_new(base, -1, EV_PERSIST, on_heartbeat, NULL);
        struct timeval hb = {5, 0};
        event_add(ev_hb, &hb);
    }
    double total = O.setup_timeout + O.start_delay + O.warmup + O.duration +
                   O.drain + O.settle + 30;
    struct timeval dl = {(time_t)total, 0};
    event_add(ev_deadline, &dl);

    t_base = lg_mono_ns();
    t_meas0 = t_meas1 = UINT64_MAX; /* nothing is "in window" yet */
    /* RSS and CPU baseline before any connection (idle mode) */
    if (O.idle) {
        srv_rss0 = lg_proc_rss_kb(O.pid);
        srv_cpu0 = lg_proc_cpu(O.pid);
    }
    t_setup_start = lg_mono_ns();
    setup_progress();
    if (phase != PH_DONE && O.spin) {
        /* bounded by the deadline timer, which ends the phase */
        while (phase != PH_DONE) {
            event_base_loop(base, EVLOOP_NONBLOCK);
            if (O.rate > 0)
                sched_run();
        }
    } else if (phase != PH_DONE) {
        event_base_dispatch(base);
    }

    if (O.idle) {
        srv_rss1 = lg_proc_rss_kb(O.pid);
        if (srv_rss1 > srv_rss_max)
            srv_rss_max = srv_rss1;
        srv_cpu1 = lg_proc_cpu(O.pid);
        report_idle();
    } else if (t_acct1) {
        if (recv_win == 0 && exit_code == 0) {
            lg_log("no relayed message arrived");
            exit_code = 3;
        }
        report_relay();
    } else {
        lg_log("no measurement (setup failed or interrupted)");
        if (exit_code == 0)
            exit_code = 1;
    }
    fflush(stdout);

    /* close everything politely */
    for (int i = 0; i < nconns; i++) {
        conns[i].closing = true;
        conn_finish(&conns[i]);
        free(conns[i].prefix);
    }
    if (server_errors || server_closes || unexpected_eof || proto_errors ||
        bad_from || bad_payload)
        lg_log("problems: %" PRIu64 " server errors, %" PRIu64
               " server closes, %" PRIu64 " unexpected eof, %" PRIu64
               " protocol errors, %" PRIu64 " wrong sender, %" PRIu64
               " bad payload",
               server_errors, server_closes, unexpected_eof, proto_errors,
               bad_from, bad_payload);
    event_free(ev_sched);
    event_free(ev_phase);
    event_free(ev_tick);
    event_free(ev_deadline);
    event_free(ev_sigint);
    if (ev_hb)
        event_free(ev_hb);
    free(conns);
    lg_bufs_free();
    free(pad_str);
    free(slot_max_us);
    event_base_free(base);
    return exit_code;
}
