/*
 * game-loadgen: duel players for p2pmesh's game role (tests/bench/
 * game_bench.sh; the protocol is docs/game.md).
 *
 * One thread, one libevent event_base, the RFC 6455 client of lg_common
 * (HTTP upgrade with the Sec-WebSocket-Accept check, masked frames with a
 * fresh key per frame, server frames parsed minimally, pings answered).
 *
 * --players N (even). Before any WebSocket opens, one guest token per
 * player comes from POST /api/auth/guest over one keep-alive HTTP
 * connection. Then players are started at --ramp players/s (at most
 * --concurrency handshakes in flight): GET /ws, {"Authenticate":{"token",
 * "protocol_version":1}}, and on "Authenticated" {"QueueForMatch":{"mode":
 * "duel"}}. In a game a player turns on every Moved whose tick is a
 * multiple of --turn-every (5), cycling Right, Down, Left, Up with a
 * growing seq: the two snakes of a duel (docs/game.md start slots: rows
 * 17 and 22 of 40, heading at each other) then circle two 5x5 squares that
 * never meet, so games last as long as the server keeps the timing. When a
 * game ends (GameEnded) the player queues again.
 *
 * The run starts when every player has seen its first game running
 * (StatusUpdated running), then --warmup s, then the measured window of
 * --duration s.
 *
 * Tick delivery lateness. Every GameEvent carries the tick it leads to;
 * the game's room schedules tick T at start + T * tick_ms (the start is
 * when StatusUpdated running of tick 0 is published; a room more than a
 * tick behind drops time). Arrival = the kernel's receive time of the
 * bytes at the player's socket (SO_TIMESTAMPNS), so the generator's own
 * scheduling delay is not counted against the server; the time the
 * generator handled each Moved gives a second, "handled", lateness that
 * includes it. For each player and game the generator keeps
 * off(T) = arrival(T) - T * tick over the game's StatusUpdated running and
 * every Moved from the warm-up on (what the ramp did to a game's schedule
 * is not held against the window), and the game's baseline = the smallest
 * off seen (the fastest delivery: the schedule plus the bare delivery
 * time). A Moved that arrives inside the window is late by
 * off(T) - baseline, computed when the game ends or at the end of the
 * window (so the baseline covers everything seen of the game until then).
 * A constant delay common to every tick of a game is not seen; jitter,
 * backlog and dropped time are. Lateness is cumulative: once a room falls
 * behind and drops time, every later tick of that game counts as late by
 * the time dropped; the interval between consecutive Moved of a game
 * (interval_ms) shows the local jitter instead. Reported: p50/p90/p99/
 * p99.9/max and the fraction late by more than one tick, the ticks
 * delivered per player against what the time spent in running games
 * allows (tick_rate_ratio: 1 = 10 Hz kept), and how the games' tick phases
 * (baseline mod tick) spread over the tick at the end of the window
 * (tick_phase_tenths: 0.1 each when even).
 *
 * Accounting as in the other generators: the server's utime+stime (all
 * threads) from /proc/PID/stat at the start and end of the window, its
 * VmRSS, the generator's own CPU (getrusage), the machine's (/proc/stat),
 * and the generator's event-loop lag (a 10 ms timer: how late it fires)
 * so that a saturated generator shows. The server's /metrics counters
 * (p2pmesh_game_ticks_late_total and the games) are read before the
 * setup, right before the warm-up and right after the window.
 *
 * Build: cc -O2 -o game-loadgen game-loadgen.c lg_common.c \
 *            $(pkg-config --cflags --libs libevent openssl)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "lg_common.h"

#define MAX_OUTQ (1u << 20) /* per-connection send queue cap */
#define MAX_ERR_PRINT 8     /* server error messages echoed */
#define TOKEN_MAX 1024

/* ------------------------------------------------------------------ */
/* options and global state                                            */

enum pstate {
    PS_FREE,
    PS_CONNECTING,
    PS_HANDSHAKE,
    PS_AUTH,  /* Authenticate sent, until Authenticated */
    PS_QUEUE, /* QueueForMatch sent, until MatchFound */
    PS_GAME,  /* MatchFound: in a game (waiting, running or just ended) */
    PS_CLOSED
};
enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_FINISH, PH_DONE };

struct opts {
    char host[64];
    int port;
    int pid;
    int players;
    double ramp;
    int concurrency;
    double warmup, duration, setup_timeout;
    int turn_every;
    int tick_ms; /* until a Snapshot says otherwise */
    char mode[16];
    int src_addrs;
    bool json, verbose, allow_remote;
};

/* arrival - tick * tick_ns of one Moved: by the kernel's receive time and
 * by the time the generator handled it (CLOCK_REALTIME ns both) */
struct samp {
    int64_t rx, app;
};

struct player {
    int fd;
    int idx;
    enum pstate st;
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
    char *token;
    bool in_setup; /* counted in in_setup (connect .. Authenticated) */
    bool ever_ran; /* has seen a game of its own running */
    bool closing;
    /* the current game */
    uint64_t game_id;
    int64_t tick_ns;
    bool running;
    bool have_base;
    int64_t base, base_app; /* min of arrival - tick * tick_ns */
    struct samp *samp;      /* window Moved offsets of this game */
    uint32_t nsamp, samp_cap;
    uint64_t next_stream; /* stream_seq expected next; 0 = unknown */
    uint64_t cmd_seq;
    unsigned turn_k;
    uint64_t run_since; /* running since (mono ns), for the tick rate */
    uint64_t t0;        /* connect started */
    uint64_t last_tick; /* tick of the last Moved, and when it came */
    int64_t last_at;
};

static struct opts O;
static struct event_base *base;
static struct player *pl;
static int np;
static struct sockaddr_in dst_addr;
static int n_src;

static enum phase phase = PH_SETUP;
static uint64_t t_setup_start, t_ramp0, t_setup_done, t_meas0, t_meas1;
static int next_start, in_setup, n_authed, n_ran, n_failed, n_open;
static int n_running; /* players whose game is running */

/* counters: _win ones count arrivals inside the window */
static uint64_t msgs_rx, msgs_rx_win, bytes_rx_win, moved_rx, moved_win;
static uint64_t other_ev_win, snapshots_rx, tickhash_win;
static uint64_t turns_sent, turns_win, queues_sent, match_found;
static uint64_t games_ended, games_ended_win, deaths_win;
static uint64_t late_n, late_gt_tick, late_gt_half, late_app_gt_tick;
/* the current message: kernel receive time of the read that completed it,
 * and when it is handled (CLOCK_REALTIME ns) */
static int64_t cur_rx, cur_app;
static uint64_t rx_ts_missing;
/* games' tick phases at the end of the window: baseline mod tick, in
 * tenths of a tick, one count per player in a running game */
static uint64_t phase_b[10], phase_n;
static uint64_t stream_gaps, stream_dups, stray_events, send_dropped;
static uint64_t server_errors, access_denied, server_closes, unexpected_eof,
    proto_errors, masked_rx, pings_rx, shutdown_rx;
static double run_ns_win; /* player-ns spent in running games in window */
static int errs_printed;
static int exit_code;
static struct player *corked;

static struct lg_hist h_late;     /* us, by kernel receive time */
static struct lg_hist h_late_app; /* us, by the generator's handling */
static struct lg_hist h_lag;      /* generator loop lag, us */
static struct lg_hist h_setup;    /* connect .. Authenticated, us */
static struct lg_hist h_gap;      /* Moved T-1 to Moved T, us */

static struct event *ev_ramp, *ev_phase, *ev_lag, *ev_tick, *ev_deadline,
    *ev_sigint;
static uint64_t lag_due;

static double srv_cpu0 = -1, srv_cpu1 = -1, cli_cpu0, cli_cpu1;
static double mach_cpu0 = -1, mach_cpu1 = -1;
static double setup_cpu0 = -1, setup_cpu1 = -1;
static long srv_rss0 = -1, srv_rss1 = -1;
static uint64_t t_acct0, t_acct1;
static double in_game_sum;
static uint64_t in_game_samples;

/* server /metrics, before the warm-up [0] and after the window [1] */
struct srv_metrics {
    bool ok;
    double ticks_late, games_owned, started, ended, commands, players;
};
static struct srv_metrics sm[2], sm_setup; /* sm_setup: before setup */

static const char *const dirs[4] = {"Right", "Down", "Left", "Up"};

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

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

/* The literal s at *pp (advanced past it). */
static bool
lit(const uint8_t **pp, const uint8_t *e, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(e - *pp) < n || memcmp(*pp, s, n) != 0)
        return false;
    *pp += n;
    return true;
}

static bool
starts(const uint8_t *d, size_t len, const char *s)
{
    size_t n = strlen(s);
    return len >= n && memcmp(d, s, n) == 0;
}

static void
tv_of(uint64_t ns, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ns / 1000000000ull);
    tv->tv_usec = (suseconds_t)((ns % 1000000000ull) / 1000);
}

static void
arm_at(struct event *ev, uint64_t at)
{
    uint64_t now = lg_mono_ns();
    struct timeval tv;
    tv_of(at > now ? at - now : 0, &tv);
    event_add(ev, &tv);
}

static void
note_server_text(const struct player *p, const char *what, const uint8_t *d,
                 size_t len)
{
    if (errs_printed < MAX_ERR_PRINT) {
        errs_printed++;
        lg_log("player %d: %s: %.*s", p->idx, what,
               (int)(len > 300 ? 300 : len), (const char *)d);
    }
}

/* ------------------------------------------------------------------ */
/* plain HTTP: guest tokens (blocking, before the loop) and /metrics    */

/* One blocking request on *fd (connected on demand, kept alive): the
 * status, the body in *body (NUL-terminated, *blen bytes); -1 on error. */
static int
http_blocking(int *fd, const char *req, char **body, size_t *blen)
{
    static char *buf;
    static size_t cap;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (*fd < 0) {
            *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (*fd < 0)
                return -1;
            int one = 1;
            setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            struct timeval tv = {10, 0};
            setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(*fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            if (connect(*fd, (struct sockaddr *)&dst_addr, sizeof dst_addr) <
                0) {
                lg_log("connect for HTTP: %s", strerror(errno));
                close(*fd);
                *fd = -1;
                return -1;
            }
        }
        size_t rl = strlen(req);
        if (send(*fd, req, rl, MSG_NOSIGNAL) != (ssize_t)rl) {
            close(*fd);
            *fd = -1;
            continue;
        }
        size_t n = 0;
        long hl = -1, clen = -1;
        bool conn_close = false;
        for (;;) {
            if (n + 65536 > cap) {
                cap = n + 65536 + cap;
                buf = lg_xrealloc(buf, cap);
            }
            ssize_t r = recv(*fd, buf + n, cap - n - 1, 0);
            if (r <= 0)
                break;
            n += (size_t)r;
            buf[n] = '\0';
            if (hl < 0) {
                char *e = memmem(buf, n, "\r\n\r\n", 4);
                if (!e)
                    continue;
                hl = e - buf + 4;
                for (char *q = buf; q < e; q++) {
                    if (strncasecmp(q, "\r\ncontent-length:", 17) == 0)
                        clen = strtol(q + 17, NULL, 10);
                    else if (strncasecmp(q, "\r\nconnection: close", 19) == 0)
                        conn_close = true;
                }
            }
            if (clen >= 0 && (long)n >= hl + clen)
                break;
        }
        if (hl < 0 || (clen >= 0 && (long)n < hl + clen)) {
            close(*fd);
            *fd = -1;
            if (n == 0)
                continue; /* a kept-alive connection the server closed */
            return -1;
        }
        if (clen < 0) { /* no length: the body runs to the close */
            clen = (long)n - hl;
            conn_close = true;
        }
        int status = 0;
        if (n > 12 && strncmp(buf, "HTTP/1.", 7) == 0)
            status = atoi(buf + 9);
        buf[hl + clen] = '\0';
        *body = buf + hl;
        *blen = (size_t)clen;
        if (conn_close) {
            close(*fd);
            *fd = -1;
        }
        return status;
    }
    return -1;
}

static bool
fetch_tokens(void)
{
    int fd = -1;
    char req[256];
    snprintf(req, sizeof req,
             "POST /api/auth/guest HTTP/1.1\r\nHost: %s:%d\r\n"
             "Content-Length: 0\r\n\r\n",
             O.host, O.port);
    for (int i = 0; i < np; i++) {
        char *body;
        size_t blen;
        int st = http_blocking(&fd, req, &body, &blen);
        const char *t = st == 200 ? strstr(body, "\"token\":\"") : NULL;
        const char *e = t ? strchr(t + 9, '"') : NULL;
        if (!e || e - (t + 9) >= TOKEN_MAX) {
            lg_log("guest token %d: HTTP %d %.200s", i, st, st > 0 ? body : "");
            if (fd >= 0)
                close(fd);
            return false;
        }
        pl[i].token = strndup(t + 9, (size_t)(e - (t + 9)));
    }
    if (fd >= 0)
        close(fd);
    return true;
}

static double
metric_of(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = body; (p = strstr(p, name)) != NULL; p += n) {
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

/* /metrics into sm[k]; blocking, so only called where no sample is taken
 * (right before the warm-up, after the window). */
static void
fetch_metrics_into(struct srv_metrics *m)
{
    int fd = -1;
    char req[256];
    snprintf(
        req, sizeof req,
        "GET /metrics HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
        O.host, O.port);
    char *body;
    size_t blen;
    int st = http_blocking(&fd, req, &body, &blen);
    if (fd >= 0)
        close(fd);
    if (st != 200)
        return;
    m->ok = true;
    m->ticks_late = metric_of(body, "p2pmesh_game_ticks_late_total");
    m->games_owned = metric_of(body, "p2pmesh_game_games_owned");
    m->started = metric_of(body, "p2pmesh_game_started_total");
    m->ended = metric_of(body, "p2pmesh_game_ended_total");
    m->commands = metric_of(body, "p2pmesh_game_commands_total");
    m->players = metric_of(body, "p2pmesh_game_players");
}

static void
fetch_metrics(int k)
{
    fetch_metrics_into(&sm[k]);
}

/* ------------------------------------------------------------------ */
/* connection I/O (as in chat-loadgen.c; WebSocket helpers in lg_common) */

static void conn_close(struct player *p, bool failed);
static void ramp_progress(void);

static bool
conn_send_raw(struct player *p, const uint8_t *d, size_t n)
{
    if (p->st == PS_FREE || p->st == PS_CLOSED || p->fd < 0)
        return false;
    if (p->out_len == 0 && p->st != PS_CONNECTING && p != corked) {
        ssize_t w = send(p->fd, d, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)n)
            return true;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                unexpected_eof++;
                conn_close(p, true);
                return false;
            }
            w = 0;
        }
        d += w;
        n -= (size_t)w;
    }
    if (p->out_len + n > MAX_OUTQ) {
        send_dropped++;
        return false;
    }
    if (p->out_off + p->out_len + n > p->out_cap) {
        if (p->out_off) {
            memmove(p->out, p->out + p->out_off, p->out_len);
            p->out_off = 0;
        }
        if (p->out_len + n > p->out_cap) {
            size_t cap = p->out_cap ? p->out_cap : 1024;
            while (cap < p->out_len + n)
                cap *= 2;
            p->out = lg_xrealloc(p->out, cap);
            p->out_cap = cap;
        }
    }
    memcpy(p->out + p->out_off + p->out_len, d, n);
    p->out_len += n;
    if (!p->wev_on && p->st != PS_CONNECTING && p != corked) {
        event_add(&p->wev, NULL);
        p->wev_on = true;
    }
    return true;
}

static bool
ws_send(struct player *p, uint8_t opcode, const void *data, size_t len)
{
    uint8_t *slot = lg_frame_slot(len);
    size_t n;
    if (len)
        memcpy(slot, data, len);
    const uint8_t *h = lg_frame_seal(opcode, len, &n);
    return conn_send_raw(p, h, n);
}

static bool
ws_send_text(struct player *p, const char *s, size_t len)
{
    return ws_send(p, 0x1, s, len);
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    struct player *p = arg;
    (void)what;
    p->wev_on = false;
    if (p->out_len == 0)
        return;
    ssize_t w =
        send(fd, p->out + p->out_off, p->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            event_add(&p->wev, NULL);
            p->wev_on = true;
            return;
        }
        unexpected_eof++;
        conn_close(p, true);
        return;
    }
    p->out_off += (size_t)w;
    p->out_len -= (size_t)w;
    if (p->out_len == 0) {
        p->out_off = 0;
        if (p->out_cap > 65536) {
            free(p->out);
            p->out = NULL;
            p->out_cap = 0;
        }
    } else {
        event_add(&p->wev, NULL);
        p->wev_on = true;
    }
}

static void
setup_left(struct player *p)
{
    if (p->in_setup) {
        p->in_setup = false;
        in_setup--;
    }
}

static void game_flush(struct player *p, uint64_t now);

static void
conn_close(struct player *p, bool failed)
{
    if (p->st == PS_CLOSED || p->st == PS_FREE)
        return;
    if (p->st == PS_GAME)
        game_flush(p, lg_mono_ns());
    if (p->running) {
        p->running = false;
        n_running--;
    }
    if (p->rev_on)
        event_del(&p->rev);
    if (p->wev_on)
        event_del(&p->wev);
    p->rev_on = p->wev_on = false;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->st = PS_CLOSED;
    n_open--;
    free(p->in);
    free(p->out);
    free(p->frag);
    p->in = p->out = p->frag = NULL;
    p->in_len = p->in_cap = p->out_off = p->out_len = p->out_cap = 0;
    p->frag_len = p->frag_cap = 0;
    if (failed && phase < PH_FINISH)
        n_failed++;
    setup_left(p);
    if (phase == PH_SETUP)
        ramp_progress();
}

/* ------------------------------------------------------------------ */
/* the game protocol                                                    */

static void
send_queue(struct player *p)
{
    char buf[96];
    int n = snprintf(buf, sizeof buf, "{\"QueueForMatch\":{\"mode\":\"%s\"}}",
                     O.mode);
    p->st = PS_QUEUE;
    queues_sent++;
    ws_send_text(p, buf, (size_t)n);
}

static void
send_turn(struct player *p)
{
    char buf[192];
    char *b = buf;
    memcpy(b, "{\"GameCommand\":{\"command_id\":{\"game_id\":", 40);
    b += 40;
    b += lg_fmt_u64(b, p->game_id);
    memcpy(b, ",\"seq\":", 7);
    b += 7;
    b += lg_fmt_u64(b, ++p->cmd_seq);
    b += sprintf(b, "},\"command\":{\"Turn\":{\"direction\":\"%s\"}}}}",
                 dirs[p->turn_k++ & 3]);
    turns_sent++;
    if (phase == PH_MEASURE)
        turns_win++;
    ws_send_text(p, buf, (size_t)(b - buf));
}

static bool
in_window(uint64_t t)
{
    return t >= t_meas0 && t < t_meas1;
}

/* Running time of p inside the window, up to now. */
static void
run_account(struct player *p, uint64_t now)
{
    if (!p->running || t_meas0 == 0)
        return;
    uint64_t a = p->run_since > t_meas0 ? p->run_since : t_meas0;
    uint64_t b = now < t_meas1 ? now : t_meas1;
    if (b > a)
        run_ns_win += (double)(b - a);
    p->run_since = now;
}

/* Turn the window samples of p's game into lateness, against the game's
 * baseline as known now. */
static void
game_flush(struct player *p, uint64_t now)
{
    run_account(p, now);
    if (p->nsamp == 0 || !p->have_base) {
        p->nsamp = 0;
        return;
    }
    for (uint32_t i = 0; i < p->nsamp; i++) {
        int64_t late = p->samp[i].rx - p->base;
        int64_t la = p->samp[i].app - p->base_app;
        if (late < 0)
            late = 0;
        if (la < 0)
            la = 0;
        lg_h_add(&h_late, (uint64_t)late / 1000);
        lg_h_add(&h_late_app, (uint64_t)la / 1000);
        late_n++;
        if (late > p->tick_ns)
            late_gt_tick++;
        if (late > p->tick_ns / 2)
            late_gt_half++;
        if (la > p->tick_ns)
            late_app_gt_tick++;
    }
    p->nsamp = 0;
}

static void
game_reset(struct player *p, uint64_t gid)
{
    game_flush(p, lg_mono_ns());
    p->game_id = gid;
    p->tick_ns = (int64_t)O.tick_ms * 1000000;
    if (p->running)
        n_running--;
    p->running = false;
    p->have_base = false;
    p->base = p->base_app = 0;
    p->next_stream = 0;
    p->cmd_seq = 0;
    p->turn_k = 0;
    p->last_tick = 0;
    p->last_at = 0;
}

static void
offer_base(struct player *p, uint64_t tick)
{
    if (phase == PH_SETUP)
        return; /* the baseline comes from the warm-up on */
    int64_t off = cur_rx - (int64_t)tick * p->tick_ns;
    int64_t oa = cur_app - (int64_t)tick * p->tick_ns;
    if (!p->have_base || off < p->base)
        p->base = off;
    if (!p->have_base || oa < p->base_app)
        p->base_app = oa;
    p->have_base = true;
}

static void
set_running(struct player *p, uint64_t now)
{
    if (p->running)
        return;
    p->running = true;
    n_running++;
    p->run_since = now;
    if (!p->ever_ran) {
        p->ever_ran = true;
        n_ran++;
        if (phase == PH_SETUP)
            ramp_progress();
    }
}

/* {"GameEvent":{"game_id":G,"tick":T,"stream_seq":N,"event":E}} */
static void
game_event(struct player *p, const uint8_t *d, size_t len, uint64_t now)
{
    const uint8_t *q = d + 13, *e = d + len; /* after {"GameEvent": */
    uint64_t gid, tick, seq;
    if (!lit(&q, e, "{\"game_id\":") || !parse_u64(&q, e, &gid) ||
        !lit(&q, e, ",\"tick\":") || !parse_u64(&q, e, &tick) ||
        !lit(&q, e, ",\"stream_seq\":") || !parse_u64(&q, e, &seq) ||
        !lit(&q, e, ",\"event\":")) {
        proto_errors++;
        note_server_text(p, "unparsable GameEvent", d, len);
        return;
    }
    if (gid != p->game_id || p->st != PS_GAME) {
        stray_events++;
        return;
    }
    bool snap = lit(&q, e, "{\"Snapshot\":");
    if (snap) {
        snapshots_rx++;
        const uint8_t *tm = memmem(q, (size_t)(e - q), "\"tick_ms\":", 10);
        uint64_t ms;
        if (tm && (tm += 10, parse_u64(&tm, e, &ms)) && ms > 0)
            p->tick_ns = (int64_t)ms * 1000000;
        p->next_stream = seq + 1;
        return;
    }
    if (p->next_stream) {
        if (seq > p->next_stream)
            stream_gaps += seq - p->next_stream;
        else if (seq < p->next_stream)
            stream_dups++;
    }
    if (seq >= p->next_stream)
        p->next_stream = seq + 1;
    if (lit(&q, e, "\"Moved\"")) {
        set_running(p, now);
        offer_base(p, tick);
        moved_rx++;
        if (in_window(now)) {
            moved_win++;
            if (p->nsamp == p->samp_cap) {
                p->samp_cap = p->samp_cap ? p->samp_cap * 2 : 256;
                p->samp = lg_xrealloc(p->samp, p->samp_cap * sizeof *p->samp);
            }
            p->samp[p->nsamp].rx = cur_rx - (int64_t)tick * p->tick_ns;
            p->samp[p->nsamp++].app = cur_app - (int64_t)tick * p->tick_ns;
            if (p->last_at && tick == p->last_tick + 1)
                lg_h_add(&h_gap, cur_rx > p->last_at
                                     ? (uint64_t)(cur_rx - p->last_at) / 1000
                                     : 0);
        }
        p->last_tick = tick;
        p->last_at = cur_rx;
        if (O.turn_every > 0 && tick % (uint64_t)O.turn_every == 0)
            send_turn(p);
        return;
    }
    bool win = in_window(now);
    if (win)
        other_ev_win++;
    if (lit(&q, e, "{\"TickHash\":")) {
        if (win)
            tickhash_win++;
    } else if (lit(&q, e, "{\"StatusUpdated\":")) {
        if (memmem(q, (size_t)(e - q), "\"running\"", 9)) {
            offer_base(p, tick);
            set_running(p, now);
        }
    } else if (lit(&q, e, "{\"SnakeDied\":")) {
        if (win)
            deaths_win++;
    } else if (lit(&q, e, "{\"GameEnded\":")) {
        game_flush(p, now);
        if (p->running)
            n_running--;
        p->running = false;
        games_ended++;
        if (win)
            games_ended_win++;
        if (phase < PH_FINISH)
            send_queue(p);
    }
}

static void
handle_message(struct player *p, const uint8_t *d, size_t len)
{
    uint64_t now = lg_mono_ns();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cur_app = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    msgs_rx++;
    if (in_window(now)) {
        msgs_rx_win++;
        bytes_rx_win += len;
    }
    if (starts(d, len, "{\"GameEvent\":")) {
        game_event(p, d, len, now);
        return;
    }
    if (starts(d, len, "{\"MatchFound\":")) {
        const uint8_t *q = d + 14, *e = d + len;
        uint64_t gid;
        if (!lit(&q, e, "{\"game_id\":") || !parse_u64(&q, e, &gid)) {
            proto_errors++;
            note_server_text(p, "unparsable MatchFound", d, len);
            return;
        }
        match_found++;
        game_reset(p, gid);
        p->st = PS_GAME;
        return;
    }
    if (starts(d, len, "{\"QueueUpdate\":") || starts(d, len, "{\"Pong\":"))
        return;
    if (starts(d, len, "{\"Authenticated\":")) {
        if (p->st != PS_AUTH) {
            proto_errors++;
            return;
        }
        n_authed++;
        lg_h_add(&h_setup, (now - p->t0) / 1000);
        setup_left(p);
        send_queue(p);
        if (phase == PH_SETUP)
            ramp_progress();
        return;
    }
    if (starts(d, len, "{\"Error\":")) {
        server_errors++;
        note_server_text(p, "server error", d, len);
        return;
    }
    if (starts(d, len, "{\"AccessDenied\":")) {
        access_denied++;
        note_server_text(p, "access denied", d, len);
        return;
    }
    if (starts(d, len, "{\"ServerShutdown\":")) {
        shutdown_rx++;
        return;
    }
    proto_errors++;
    note_server_text(p, "unexpected message", d, len);
}

static bool
handle_frame(struct player *p, bool fin, uint8_t op, const uint8_t *d,
             size_t len)
{
    switch (op) {
    case 0x1:
    case 0x2:
        if (p->frag_op) {
            proto_errors++;
            conn_close(p, true);
            return false;
        }
        if (fin) {
            handle_message(p, d, len);
        } else {
            p->frag_op = op;
            p->frag_len = 0;
            goto append;
        }
        return p->st != PS_CLOSED;
    case 0x0:
        if (!p->frag_op) {
            proto_errors++;
            conn_close(p, true);
            return false;
        }
    append:
        if (p->frag_len + len > LG_MAX_FRAME) {
            proto_errors++;
            conn_close(p, true);
            return false;
        }
        if (p->frag_len + len > p->frag_cap) {
            p->frag_cap = (p->frag_len + len) * 2 + 256;
            p->frag = lg_xrealloc(p->frag, p->frag_cap);
        }
        memcpy(p->frag + p->frag_len, d, len);
        p->frag_len += len;
        if (fin && op == 0x0) {
            p->frag_op = 0;
            handle_message(p, p->frag, p->frag_len);
            p->frag_len = 0;
        }
        return p->st != PS_CLOSED;
    case 0x9:
        pings_rx++;
        if (len > 125) {
            proto_errors++;
            conn_close(p, true);
            return false;
        }
        {
            uint8_t tmp[125];
            memcpy(tmp, d, len);
            ws_send(p, 0xA, tmp, len);
        }
        return p->st != PS_CLOSED;
    case 0xA:
        return true;
    case 0x8: {
        unsigned code = len >= 2 ? ((unsigned)d[0] << 8 | d[1]) : 1005;
        if (!p->closing && phase < PH_FINISH) {
            server_closes++;
            if (errs_printed < MAX_ERR_PRINT) {
                errs_printed++;
                lg_log("player %d: server closed with %u %.*s", p->idx, code,
                       (int)(len > 2 ? len - 2 : 0), (const char *)d + 2);
            }
        }
        conn_close(p, true);
        return false;
    }
    default:
        proto_errors++;
        conn_close(p, true);
        return false;
    }
}

static size_t
parse_frames(struct player *p, uint8_t *d, size_t n)
{
    size_t off = 0;
    while (n - off >= 2) {
        struct lg_frame f;
        int r = lg_frame_head(d + off, n - off, &f);
        if (r < 0) {
            proto_errors++;
            conn_close(p, true);
            return n;
        }
        if (r == 0)
            break;
        uint8_t *pay = d + off + f.hl;
        if (f.masked)
            masked_rx++;
        off += f.hl + (size_t)f.plen;
        if (!handle_frame(p, f.fin, f.op, pay, (size_t)f.plen))
            return n;
    }
    return off;
}

static void on_read_body(evutil_socket_t fd, struct player *p);

/* recv() that also sets cur_rx: the kernel's receive time of the data
 * (SO_TIMESTAMPNS; for TCP that of the last segment read, so a frame read
 * together with later ones looks later than it was, never earlier); the
 * current time when the kernel gives none. */
static ssize_t
recv_ts(int fd, void *buf, size_t len)
{
    union {
        char b[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf, len};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.b;
    mh.msg_controllen = sizeof ctl.b;
    ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT);
    if (r <= 0)
        return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            cur_rx = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
            return r;
        }
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cur_rx = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    rx_ts_missing++;
    return r;
}

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    struct player *p = arg;
    (void)what;
    corked = p;
    on_read_body(fd, p);
    corked = NULL;
    if (p->st != PS_CLOSED && p->out_len && !p->wev_on)
        on_write(p->fd, EV_WRITE, p);
}

static void
on_read_body(evutil_socket_t fd, struct player *p)
{
    for (int iter = 0; iter < 8; iter++) {
        lg_scratch_reserve(p->in_len);
        size_t have = p->in_len;
        if (have)
            memcpy(lg_scratch, p->in, have);
        size_t room = lg_scratch_cap - have;
        ssize_t r = recv_ts(fd, lg_scratch + have, room);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                       errno != EINTR)) {
            if (phase < PH_FINISH && !p->closing) {
                unexpected_eof++;
                if (errs_printed < MAX_ERR_PRINT) {
                    errs_printed++;
                    lg_log("player %d: connection %s (state %d)", p->idx,
                           r == 0 ? "closed by server" : strerror(errno),
                           p->st);
                }
            }
            conn_close(p, true);
            return;
        }
        if (r < 0)
            return;
        size_t n = have + (size_t)r;
        size_t off = 0;
        if (p->st == PS_HANDSHAKE) {
            long hl = lg_ws_upgrade(lg_scratch, n, p->key, p->idx,
                                    &errs_printed, MAX_ERR_PRINT);
            if (hl < 0) {
                conn_close(p, true);
                return;
            }
            if (hl == 0)
                goto keep;
            off = (size_t)hl;
            /* the client speaks first: Authenticate */
            p->st = PS_AUTH;
            char *m = (char *)lg_frame_slot(strlen(p->token) + 64);
            size_t mn = (size_t)sprintf(
                m,
                "{\"Authenticate\":{\"token\":\"%s\",\"protocol_version\":1}}",
                p->token);
            size_t fl;
            const uint8_t *h = lg_frame_seal(0x1, mn, &fl);
            conn_send_raw(p, h, fl);
            if (p->st == PS_CLOSED)
                return;
        }
        off += parse_frames(p, lg_scratch + off, n - off);
        if (p->st == PS_CLOSED)
            return;
    keep:
        lg_keep_input(&p->in, &p->in_len, &p->in_cap, lg_scratch + off,
                      n - off);
        if ((size_t)r < room)
            return;
    }
}

/* ------------------------------------------------------------------ */
/* setup: the ramp                                                     */

static void
on_connected(evutil_socket_t fd, short what, void *arg)
{
    struct player *p = arg;
    (void)what;
    p->wev_on = false;
    int err = lg_sock_error(fd);
    if (err) {
        if (errs_printed < MAX_ERR_PRINT) {
            errs_printed++;
            lg_log("player %d: connect: %s", p->idx, strerror(err));
        }
        conn_close(p, true);
        return;
    }
    event_assign(&p->wev, base, p->fd, EV_WRITE, on_write, p);
    event_assign(&p->rev, base, p->fd, EV_READ | EV_PERSIST, on_read, p);
    event_add(&p->rev, NULL);
    p->rev_on = true;
    char req[512];
    int n =
        snprintf(req, sizeof req,
                 "GET /ws HTTP/1.1\r\nHost: %s:%d\r\n" LG_WS_UPGRADE_HEADERS,
                 O.host, O.port, p->key);
    p->st = PS_HANDSHAKE;
    conn_send_raw(p, (const uint8_t *)req, (size_t)n);
}

static void
player_start(struct player *p)
{
    int fd = lg_socket(p->idx, n_src);
    if (fd < 0) {
        n_failed++;
        p->st = PS_CLOSED;
        return;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    p->fd = fd;
    p->st = PS_CONNECTING;
    p->in_setup = true;
    p->t0 = lg_mono_ns();
    in_setup++;
    n_open++;
    lg_ws_key(p->key);
    event_assign(&p->wev, base, fd, EV_WRITE, on_connected, p);
    if (connect(fd, (const struct sockaddr *)&dst_addr, sizeof dst_addr) < 0 &&
        errno != EINPROGRESS) {
        if (errs_printed < MAX_ERR_PRINT) {
            errs_printed++;
            lg_log("player %d: connect: %s", p->idx, strerror(errno));
        }
        conn_close(p, true);
        return;
    }
    event_add(&p->wev, NULL);
    p->wev_on = true;
}

static void start_run(void);

static void
ramp_progress(void)
{
    static bool busy;
    if (busy || phase != PH_SETUP)
        return;
    busy = true;
    uint64_t now = lg_mono_ns();
    double allowed = (double)(now - t_ramp0) / 1e9 * O.ramp + 1;
    while (next_start < np && in_setup < O.concurrency &&
           (double)next_start < allowed)
        player_start(&pl[next_start++]);
    busy = false;
    if (next_start >= np && n_ran + n_failed >= np && n_failed == 0)
        start_run();
    else if (n_failed > 0 && next_start >= np && in_setup == 0) {
        lg_log("setup failed: %d of %d players failed", n_failed, np);
        exit_code = 1;
        phase = PH_DONE;
        event_base_loopbreak(base);
    }
}

static void
on_ramp(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    ramp_progress();
}

/* ------------------------------------------------------------------ */
/* run phases                                                          */

static void
on_lag(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = lg_mono_ns();
    if (phase == PH_MEASURE && now > lag_due)
        lg_h_add(&h_lag, (now - lag_due) / 1000);
    if (phase == PH_MEASURE) {
        in_game_sum += n_running;
        in_game_samples++;
    }
    lag_due = now + 10000000ull;
    arm_at(ev_lag, lag_due);
}

static void
finish_window(void)
{
    uint64_t now = lg_mono_ns();
    t_acct1 = now;
    srv_cpu1 = lg_proc_cpu(O.pid);
    cli_cpu1 = lg_cpu_self();
    mach_cpu1 = lg_machine_busy();
    srv_rss1 = lg_proc_rss_kb(O.pid);
    phase = PH_FINISH;
    for (int i = 0; i < np; i++) {
        struct player *p = &pl[i];
        if (p->st == PS_GAME && p->running && p->have_base && p->tick_ns > 0) {
            int64_t ph = p->base % p->tick_ns;
            if (ph < 0)
                ph += p->tick_ns;
            phase_b[ph * 10 / p->tick_ns]++;
            phase_n++;
        }
        if (p->st == PS_GAME)
            game_flush(p, now);
    }
    fetch_metrics(1);
    phase = PH_DONE;
    event_base_loopbreak(base);
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
        srv_rss0 = lg_proc_rss_kb(O.pid);
        cli_cpu0 = lg_cpu_self();
        mach_cpu0 = lg_machine_busy();
        arm_at(ev_phase, t_meas1);
    } else if (phase == PH_MEASURE) {
        finish_window();
    }
}

static void
start_run(void)
{
    if (phase != PH_SETUP)
        return;
    t_setup_done = lg_mono_ns();
    setup_cpu1 = lg_proc_cpu(O.pid);
    if (O.verbose)
        lg_log("all %d players in games after %.2f s", np,
               (double)(t_setup_done - t_setup_start) / 1e9);
    event_del(ev_ramp);
    fetch_metrics(0);
    /* what happened to the games' schedules during the ramp is not held
     * against the window: baselines start with the warm-up */
    for (int i = 0; i < np; i++)
        pl[i].have_base = false;
    uint64_t now = lg_mono_ns();
    phase = PH_WARMUP;
    t_meas0 = now + (uint64_t)(O.warmup * 1e9);
    t_meas1 = t_meas0 + (uint64_t)(O.duration * 1e9);
    arm_at(ev_phase, t_meas0);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = lg_mono_ns();
    if (phase == PH_SETUP) {
        if (O.verbose) {
            static uint64_t last;
            if (now - last > 2000000000ull) {
                last = now;
                lg_log("setup: %d started, %d authenticated, %d in a running "
                       "game, %d failed",
                       next_start, n_authed, n_ran, n_failed);
            }
        }
        if (now - t_setup_start > (uint64_t)(O.setup_timeout * 1e9)) {
            int st[PS_CLOSED + 1] = {0};
            for (int i = 0; i < np; i++)
                st[pl[i].st]++;
            lg_log("setup timed out: %d started, %d authenticated, %d in a "
                   "running game, %d failed (connecting %d, upgrading %d, "
                   "authenticating %d, queued %d, in game %d)",
                   next_start, n_authed, n_ran, n_failed, st[PS_CONNECTING],
                   st[PS_HANDSHAKE], st[PS_AUTH], st[PS_QUEUE], st[PS_GAME]);
            exit_code = 1;
            phase = PH_DONE;
            event_base_loopbreak(base);
        }
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
    phase = PH_DONE;
    event_base_loopbreak(base);
}

static void
on_sigint(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    lg_log("interrupted");
    exit_code = 1;
    phase = PH_DONE;
    event_base_loopbreak(base);
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
    double tick_ms = O.tick_ms;
    double expected = run_ns_win / (tick_ms * 1e6);
    double ratio = expected > 0 ? (double)moved_win / expected : 0;
    double in_game =
        in_game_samples ? in_game_sum / (double)in_game_samples : 0;
    double p99 = (double)lg_h_pct(&h_late, 99) / 1000.0;
    double setup_s = (double)(t_setup_done - t_setup_start) / 1e9;
    bool target = late_n > 0 && p99 <= tick_ms;
#define MS(v) ((double)(v) / 1000.0)
#define MDELTA(f) (sm[0].ok && sm[1].ok ? sm[1].f - sm[0].f : -1)
    if (O.json) {
        printf(
            "{\"mode\":\"game\",\"game_mode\":\"%s\",\"players\":%d,"
            "\"tick_ms\":%d,\"turn_every\":%d,\"ramp_per_s\":%.0f,"
            "\"window_s\":%.3f,\"warmup_s\":%.3f,\"setup_s\":%.3f,"
            "\"setup_server_cpu_s\":%.3f,"
            "\"players_in_running_games\":%.1f,\"games_running\":%.1f,"
            "\"msgs_rx_per_s\":%.1f,\"bytes_rx_per_s\":%.1f,"
            "\"moved_rx\":%" PRIu64 ",\"ticks_per_player_s\":%.3f,"
            "\"tick_rate_ratio\":%.4f,\"other_events\":%" PRIu64
            ",\"tickhash\":%" PRIu64 ",\"turns_sent\":%" PRIu64
            ",\"games_ended\":%" PRIu64 ",\"deaths\":%" PRIu64 ",",
            O.mode, np, O.tick_ms, O.turn_every, O.ramp, win, O.warmup, setup_s,
            setup_cpu0 >= 0 && setup_cpu1 >= 0 ? setup_cpu1 - setup_cpu0 : -1,
            in_game, in_game / 2, win > 0 ? (double)msgs_rx_win / win : 0,
            win > 0 ? (double)bytes_rx_win / win : 0, moved_win,
            win > 0 && np ? (double)moved_win / win / np : 0, ratio,
            other_ev_win, tickhash_win, turns_win, games_ended_win, deaths_win);
        printf("\"lateness_ms\":{\"n\":%" PRIu64 ",\"mean\":%.2f,\"p50\":%.2f,"
               "\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f},"
               "\"late_gt_tick\":%" PRIu64 ",\"frac_late_gt_tick\":%.6f,"
               "\"frac_late_gt_half_tick\":%.6f,\"p99_within_tick\":%s,"
               "\"interval_ms\":{\"n\":%" PRIu64 ",\"p1\":%.2f,\"p50\":%.2f,"
               "\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f},"
               "\"lateness_handled_ms\":{\"p50\":%.2f,\"p99\":%.2f,"
               "\"p999\":%.2f,\"max\":%.2f},\"frac_handled_late_gt_tick\":%.6f,"
               "\"rx_ts_missing\":%" PRIu64 ",\"tick_phase_tenths\":[",
               h_late.n, h_late.n ? MS(h_late.sum / h_late.n) : 0,
               MS(lg_h_pct(&h_late, 50)), MS(lg_h_pct(&h_late, 90)),
               MS(lg_h_pct(&h_late, 99)), MS(lg_h_pct(&h_late, 99.9)),
               MS(h_late.max), late_gt_tick,
               late_n ? (double)late_gt_tick / (double)late_n : 0,
               late_n ? (double)late_gt_half / (double)late_n : 0,
               target ? "true" : "false", h_gap.n, MS(lg_h_pct(&h_gap, 1)),
               MS(lg_h_pct(&h_gap, 50)), MS(lg_h_pct(&h_gap, 99)),
               MS(lg_h_pct(&h_gap, 99.9)), MS(h_gap.max),
               MS(lg_h_pct(&h_late_app, 50)), MS(lg_h_pct(&h_late_app, 99)),
               MS(lg_h_pct(&h_late_app, 99.9)), MS(h_late_app.max),
               late_n ? (double)late_app_gt_tick / (double)late_n : 0,
               rx_ts_missing);
        for (int i = 0; i < 10; i++)
            printf("%s%.4f", i ? "," : "",
                   phase_n ? (double)phase_b[i] / (double)phase_n : 0);
        printf("],");
        printf("\"server_cpu_s\":%.3f,\"server_cpu_util\":%.4f,"
               "\"server_rss_kb\":%ld,\"server_rss_kb_start\":%ld,"
               "\"client_cpu_s\":%.3f,\"client_cpu_util\":%.4f,"
               "\"machine_cpu_s\":%.3f,\"other_cpu_s\":%.3f,"
               "\"client_loop_lag_ms\":{\"p50\":%.2f,\"p99\":%.2f,"
               "\"max\":%.2f},\"setup_ms\":{\"p50\":%.2f,\"p99\":%.2f,"
               "\"max\":%.2f},",
               srv, srv >= 0 && win > 0 ? srv / win : -1, srv_rss1, srv_rss0,
               cli, win > 0 ? cli / win : 0, mach, other,
               MS(lg_h_pct(&h_lag, 50)), MS(lg_h_pct(&h_lag, 99)),
               MS(h_lag.max), MS(lg_h_pct(&h_setup, 50)),
               MS(lg_h_pct(&h_setup, 99)), MS(h_setup.max));
        printf("\"server_ticks_late_setup\":%.0f,"
               "\"server_ticks_late\":%.0f,\"server_games_owned\":%.0f,"
               "\"server_games_started\":%.0f,\"server_games_ended\":%.0f,"
               "\"server_commands\":%.0f,",
               sm_setup.ok && sm[0].ok ? sm[0].ticks_late - sm_setup.ticks_late
                                       : -1,
               MDELTA(ticks_late), sm[1].ok ? sm[1].games_owned : -1,
               MDELTA(started), MDELTA(ended), MDELTA(commands));
        printf("\"stream_gaps\":%" PRIu64 ",\"stream_dups\":%" PRIu64
               ",\"stray_events\":%" PRIu64 ",\"send_dropped\":%" PRIu64
               ",\"server_errors\":%" PRIu64 ",\"access_denied\":%" PRIu64
               ",\"server_closes\":%" PRIu64 ",\"unexpected_eof\":%" PRIu64
               ",\"proto_errors\":%" PRIu64 ",\"masked_frames\":%" PRIu64
               ",\"pings\":%" PRIu64 ",\"shutdowns\":%" PRIu64
               ",\"failed\":%d,\"match_found\":%" PRIu64
               ",\"queues_sent\":%" PRIu64 ",\"games_ended_total\":%" PRIu64
               ",\"ok\":%s}\n",
               stream_gaps, stream_dups, stray_events, send_dropped,
               server_errors, access_denied, server_closes, unexpected_eof,
               proto_errors, masked_rx, pings_rx, shutdown_rx, n_failed,
               match_found, queues_sent, games_ended,
               exit_code == 0 ? "true" : "false");
    } else {
        printf("game: %d players (%s), tick %d ms, window %.2f s, setup "
               "%.2f s\n",
               np, O.mode, O.tick_ms, win, setup_s);
        printf("in running games   %.0f players (%.0f games)\n", in_game,
               in_game / 2);
        printf("received           %.0f msgs/s, %.0f B/s; Moved %" PRIu64
               " (%.2f per player-s, tick rate ratio %.4f)\n",
               win > 0 ? (double)msgs_rx_win / win : 0,
               win > 0 ? (double)bytes_rx_win / win : 0, moved_win,
               win > 0 && np ? (double)moved_win / win / np : 0, ratio);
        printf("tick lateness      p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  "
               "max %.2f ms (n %" PRIu64 "); > 1 tick %.4f %%, > 1/2 tick "
               "%.4f %%\n",
               MS(lg_h_pct(&h_late, 50)), MS(lg_h_pct(&h_late, 90)),
               MS(lg_h_pct(&h_late, 99)), MS(lg_h_pct(&h_late, 99.9)),
               MS(h_late.max), h_late.n,
               late_n ? 100.0 * (double)late_gt_tick / (double)late_n : 0,
               late_n ? 100.0 * (double)late_gt_half / (double)late_n : 0);
        printf("p99 within a tick  %s\n", target ? "yes" : "NO");
        printf("tick interval      p1 %.2f  p50 %.2f  p99 %.2f  max %.2f ms\n",
               MS(lg_h_pct(&h_gap, 1)), MS(lg_h_pct(&h_gap, 50)),
               MS(lg_h_pct(&h_gap, 99)), MS(h_gap.max));
        printf("lateness handled   p50 %.2f  p99 %.2f  max %.2f ms (by the "
               "generator's clock: adds its own delay)\n",
               MS(lg_h_pct(&h_late_app, 50)), MS(lg_h_pct(&h_late_app, 99)),
               MS(h_late_app.max));
        printf("tick phases        ");
        for (int i = 0; i < 10; i++)
            printf("%.3f ", phase_n ? (double)phase_b[i] / (double)phase_n : 0);
        printf("(share of games per tenth of a tick)\n");
        if (srv >= 0)
            printf("server CPU         %.2f s (%.1f %%), RSS %ld KiB\n", srv,
                   100 * srv / win, srv_rss1);
        printf("client CPU         %.2f s (%.1f %%), loop lag p99 %.2f ms, "
               "max %.2f ms\n",
               cli, 100 * cli / win, MS(lg_h_pct(&h_lag, 99)), MS(h_lag.max));
        if (mach >= 0)
            printf("other CPU          %.2f s\n", other);
        printf("games              ended in window %" PRIu64
               ", server ticks late: setup %.0f, warm-up + window %.0f\n",
               games_ended_win,
               sm_setup.ok && sm[0].ok ? sm[0].ticks_late - sm_setup.ticks_late
                                       : -1,
               MDELTA(ticks_late));
        printf("errors             server %" PRIu64 ", denied %" PRIu64
               ", closes %" PRIu64 ", eof %" PRIu64 ", protocol %" PRIu64
               ", stream gaps %" PRIu64 "\n",
               server_errors, access_denied, server_closes, unexpected_eof,
               proto_errors, stream_gaps);
    }
}

/* ------------------------------------------------------------------ */
/* main                                                                */

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: game-loadgen [options]\n"
        "  --host ADDR         server IPv4 address (default 127.0.0.1)\n"
        "  --port N            server port (default 8080)\n"
        "  --pid PID           server process: CPU (utime+stime) and VmRSS\n"
        "  --players N         players, even for duels (default 1000)\n"
        "  --mode M            duel | solo | ffa (default duel)\n"
        "  --ramp R            players started per second (default 500)\n"
        "  --concurrency N     handshakes in flight at once (default 256)\n"
        "  --warmup S          after every player saw a game running "
        "(default 3)\n"
        "  --duration S        measured window (default 20)\n"
        "  --turn-every K      turn on Moved of ticks divisible by K (5; 0: "
        "never)\n"
        "  --tick-ms MS        game tick until a Snapshot says (default 100)\n"
        "  --src-addrs K       spread connections over 127.0.0.1..K (0 = "
        "auto)\n"
        "  --setup-timeout S   give up setting up after S seconds (default "
        "120)\n"
        "  --json              print one JSON line with the results\n"
        "  --allow-remote      allow a non-loopback --host\n"
        "  --verbose           progress on stderr\n");
}

int
main(int argc, char **argv)
{
    lg_progname = "game-loadgen";
    memset(&O, 0, sizeof O);
    snprintf(O.host, sizeof O.host, "127.0.0.1");
    snprintf(O.mode, sizeof O.mode, "duel");
    O.port = 8080;
    O.players = 1000;
    O.ramp = 500;
    O.concurrency = 256;
    O.warmup = 3;
    O.duration = 20;
    O.turn_every = 5;
    O.tick_ms = 100;
    O.setup_timeout = 120;

    enum {
        OPT_HOST = 1,
        OPT_PORT,
        OPT_PID,
        OPT_PLAYERS,
        OPT_MODE,
        OPT_RAMP,
        OPT_CONC,
        OPT_WARMUP,
        OPT_DURATION,
        OPT_TURN,
        OPT_TICK,
        OPT_SRC,
        OPT_SETUPTO,
        OPT_JSON,
        OPT_REMOTE,
        OPT_VERBOSE,
        OPT_HELP
    };
    static const struct option lo[] = {
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"pid", required_argument, 0, OPT_PID},
        {"players", required_argument, 0, OPT_PLAYERS},
        {"mode", required_argument, 0, OPT_MODE},
        {"ramp", required_argument, 0, OPT_RAMP},
        {"concurrency", required_argument, 0, OPT_CONC},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"duration", required_argument, 0, OPT_DURATION},
        {"turn-every", required_argument, 0, OPT_TURN},
        {"tick-ms", required_argument, 0, OPT_TICK},
        {"src-addrs", required_argument, 0, OPT_SRC},
        {"setup-timeout", required_argument, 0, OPT_SETUPTO},
        {"json", no_argument, 0, OPT_JSON},
        {"allow-remote", no_argument, 0, OPT_REMOTE},
        {"verbose", no_argument, 0, OPT_VERBOSE},
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
        case OPT_PID:
            O.pid = (int)lg_parse_num(optarg, "--pid");
            break;
        case OPT_PLAYERS:
            O.players = (int)lg_parse_num(optarg, "--players");
            break;
        case OPT_MODE:
            if (strcmp(optarg, "duel") != 0 && strcmp(optarg, "solo") != 0 &&
                strcmp(optarg, "ffa") != 0) {
                lg_log("--mode: duel, solo or ffa");
                return 2;
            }
            snprintf(O.mode, sizeof O.mode, "%s", optarg);
            break;
        case OPT_RAMP:
            O.ramp = lg_parse_num(optarg, "--ramp");
            break;
        case OPT_CONC:
            O.concurrency = (int)lg_parse_num(optarg, "--concurrency");
            break;
        case OPT_WARMUP:
            O.warmup = lg_parse_num(optarg, "--warmup");
            break;
        case OPT_DURATION:
            O.duration = lg_parse_num(optarg, "--duration");
            break;
        case OPT_TURN:
            O.turn_every = (int)lg_parse_num(optarg, "--turn-every");
            break;
        case OPT_TICK:
            O.tick_ms = (int)lg_parse_num(optarg, "--tick-ms");
            break;
        case OPT_SRC:
            O.src_addrs = (int)lg_parse_num(optarg, "--src-addrs");
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
    if (O.port <= 0 || O.port > 65535 || O.players < 1 || O.players > 19000 ||
        (strcmp(O.mode, "duel") == 0 && O.players % 2 != 0) || O.ramp <= 0 ||
        O.concurrency < 1 || O.duration <= 0 || O.duration > 3600 ||
        O.warmup > 3600 || O.tick_ms < 1) {
        lg_log("option out of range (duels need an even --players)");
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
    np = O.players;
    if ((rlim_t)np + 32 > rl.rlim_cur) {
        lg_log("%d players need more than the fd limit %llu", np,
               (unsigned long long)rl.rlim_cur);
        return 2;
    }
    n_src = O.src_addrs > 0 ? O.src_addrs : 1 + np / 4000;
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
    lg_bufs_init(4096);

    pl = calloc((size_t)np, sizeof *pl);
    if (!pl) {
        lg_log("out of memory");
        return 1;
    }
    for (int i = 0; i < np; i++) {
        pl[i].fd = -1;
        pl[i].idx = i;
        pl[i].st = PS_FREE;
    }

    t_setup_start = lg_mono_ns();
    setup_cpu0 = lg_proc_cpu(O.pid);
    fetch_metrics_into(&sm_setup);
    if (!fetch_tokens()) {
        lg_log("could not get guest tokens");
        return 1;
    }
    if (O.verbose)
        lg_log("%d guest tokens in %.2f s", np,
               (double)(lg_mono_ns() - t_setup_start) / 1e9);

    ev_ramp = event_new(base, -1, EV_PERSIST, on_ramp, NULL);
    ev_phase = evtimer_new(base, on_phase, NULL);
    ev_lag = evtimer_new(base, on_lag, NULL);
    ev_tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    ev_deadline = evtimer_new(base, on_deadline, NULL);
    ev_sigint = evsignal_new(base, SIGINT, on_sigint, NULL);
    event_add(ev_sigint, NULL);
    struct timeval tv10 = {0, 10000}, tv100 = {0, 100000};
    event_add(ev_ramp, &tv10);
    event_add(ev_tick, &tv100);
    lag_due = lg_mono_ns() + 10000000ull;
    arm_at(ev_lag, lag_due);
    double total = O.setup_timeout + O.warmup + O.duration + 30;
    struct timeval dl = {(time_t)total, 0};
    event_add(ev_deadline, &dl);

    t_ramp0 = lg_mono_ns();
    ramp_progress();
    if (phase != PH_DONE)
        event_base_dispatch(base);

    if (t_acct1) {
        if (moved_win == 0 && exit_code == 0) {
            lg_log("no tick was delivered in the window");
            exit_code = 3;
        }
        report();
    } else {
        lg_log("no measurement (setup failed or interrupted)");
        if (exit_code == 0)
            exit_code = 1;
    }
    fflush(stdout);

    if (server_errors || access_denied || server_closes || unexpected_eof ||
        proto_errors || stream_gaps || n_failed)
        lg_log("problems: %" PRIu64 " server errors, %" PRIu64
               " denied, %" PRIu64 " server closes, %" PRIu64
               " unexpected eof, %" PRIu64 " protocol errors, %" PRIu64
               " stream gaps, %d failed",
               server_errors, access_denied, server_closes, unexpected_eof,
               proto_errors, stream_gaps, n_failed);
    for (int i = 0; i < np; i++) {
        struct player *p = &pl[i];
        if (p->rev_on)
            event_del(&p->rev);
        if (p->wev_on)
            event_del(&p->wev);
        if (p->fd >= 0)
            close(p->fd);
        free(p->in);
        free(p->out);
        free(p->frag);
        free(p->samp);
        free(p->token);
    }
    event_free(ev_ramp);
    event_free(ev_phase);
    event_free(ev_lag);
    event_free(ev_tick);
    event_free(ev_deadline);
    event_free(ev_sigint);
    free(pl);
    lg_bufs_free();
    event_base_free(base);
    return exit_code;
}
