/*
 * tunnel-loadgen: load generator for mTLS HTTPS CONNECT proxies: p2pmesh's
 * tunnel role, stunnel4 + tinyproxy and HAProxy + tinyproxy
 * (tests/bench/tunnel_bench.sh, docs/benchmarks.md "Tunnel (issue 6)").
 *
 * One thread, one libevent event_base, non-blocking OpenSSL 3 client
 * connections (TLS 1.3, an ECDSA client certificate, X25519 only,
 * --ciphersuites), and in the same event loop the TARGET every CONNECT
 * reaches: a plain TCP listener on 127.0.0.1:--target-port. A tunnel's
 * first 16 bytes (the HELLO, "tlg1 K ........\n", K = E echo, D download,
 * U upload, H hold) tell the target what to do; the target sends the HELLO
 * back first in every case (the round trip that proves the pipe works).
 *
 * Modes (--mode):
 *   handshake  --conns C connections in a closed loop (or --rate R new
 *              connections per second, open loop): TCP connect, a full mTLS
 *              handshake (--resume: resume the session this slot got last),
 *              then read until the server's NewSessionTicket arrives (in TLS
 *              1.3 the server sends it after verifying the client's
 *              certificate and Finished; waited for at most --ticket-wait s,
 *              otherwise counted in no_ticket), then close_notify and close.
 *   connect    the same, but resumed by default, and after the handshake
 *              `CONNECT 127.0.0.1:T HTTP/1.1`, the 200 head, the HELLO and
 *              its echo, then close. Histograms of the time to the 200 and
 *              to the echo, from the intended start time (open loop: no
 *              coordinated omission) or the start (closed loop).
 *   bulk       --conns K tunnels (CONNECT, HELLO 'D' or 'U' by --dir) moving
 *              bytes as fast as they go: download = the target sends an
 *              endless stream, the client reads; upload = the client writes
 *              16 KiB records, the target reads. Bytes counted where they
 *              arrive, during the measured window.
 *   idle       --conns N tunnels (CONNECT, HELLO 'H' and its echo), then
 *              nothing for --settle s; the server stack's RSS is read before
 *              the first connection and after the settle -> KiB per tunnel.
 *
 * Accounting: the server stack is every --pid given (the first is the
 * "front", the TLS-terminating process) and all their descendants, found
 * in /proc at each sample: utime+stime (+ cutime+cstime of reaped children)
 * and RSS at the start and end of the measured window; the generator's own
 * CPU (getrusage) and the machine's (/proc/stat) over the same window.
 *
 * Build: make tests/bench/tunnel-loadgen, or
 *   cc -O2 -o tunnel-loadgen tunnel-loadgen.c lg_common.c \
 *       $(pkg-config --cflags --libs libevent openssl)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
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
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "lg_common.h"

#define HELLO_LEN 16
#define MAX_HEAD 4096
#define MAX_ERR_PRINT 8
#define MAX_PIDS 16
#define SRC_CHUNK (256u << 10) /* target source: bytes per send() */
#define READS_PER_CB 32        /* bounded work per callback */
#define WRITES_PER_CB 32

enum mode { M_HANDSHAKE, M_CONNECT, M_BULK, M_IDLE };
static const char *mode_names[] = {"handshake", "connect", "bulk", "idle"};
static const char *state_names[] = {"free",
                                    "tcp connect",
                                    "TLS handshake",
                                    "waiting for the ticket",
                                    "writing",
                                    "waiting for the CONNECT answer",
                                    "waiting for the echo",
                                    "pipe",
                                    "hold"};
enum cst {
    C_FREE,
    C_TCP,    /* connecting */
    C_TLS,    /* handshaking */
    C_TICKET, /* handshake mode: waiting for the NewSessionTicket */
    C_WRITE,  /* writing c->out, then c->next */
    C_HEAD,   /* reading the CONNECT response head */
    C_ECHO,   /* reading the HELLO echo */
    C_PIPE,   /* bulk: moving bytes */
    C_HOLD,   /* idle: open, nothing to do */
};
enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_SETTLE, PH_DONE };

struct opts {
    char host[64];
    int port;
    enum mode mode;
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    char sni[256];
    char ciphersuites[256], groups[128];
    int pids[MAX_PIDS], npids;
    char label[64];
    int conns;
    double rate;
    int resume; /* -1 = mode default */
    bool verify_server;
    double duration, warmup, drain, settle, ticket_wait, op_timeout;
    double setup_timeout;
    int setup_conc;
    char target_host[64];
    int target_port;
    bool upload;
    int chunk;
    int src_addrs;
    bool json, verbose, allow_remote;
};

struct conn {
    int fd;
    int idx;
    enum cst st, next;
    SSL *ssl;
    SSL_SESSION *sess; /* this slot's last ticket */
    struct event ev_r, ev_w, ev_t;
    bool ev_set, t_on;
    uint64_t t_int, t_start, t_tls, t_200;
    const uint8_t *out;
    size_t out_len;
    char head[MAX_HEAD];
    size_t head_len;
    uint8_t echo[HELLO_LEN];
    size_t echo_len;
    uint8_t hello[HELLO_LEN];
    bool got_ticket, counted_window, restart;
    int io_calls;
    int free_next; /* free list */
};

struct tconn {
    int fd;
    struct event ev_r, ev_w, ev_pace;
    uint8_t hello[HELLO_LEN];
    int hl;
    char kind;
    bool w_on, pace_on;
    uint64_t t0, sent; /* paced source (bulk --rate) */
};

/* one sample of the server stack */
struct psamp {
    double cpu_all, cpu_front;
    long rss_all_kb, rss_front_kb;
    int nproc, threads;
};

static struct opts O;
static struct event_base *base;
static SSL_CTX *ctx;
static struct conn *conns;
static int nconns;
static int free_head = -1;
static struct sockaddr_in dst_addr;
static int n_src;
static int listen_fd = -1;
static struct event ev_listen;
static int target_port_bound;

static enum phase phase = PH_SETUP;
static uint64_t t_start_all, t_run0, t_meas0, t_meas1, t_setup_done;
static uint64_t sched_k, starts_total, iter_seq;
static double sched_interval_ns;
static struct event *ev_sched, *ev_phase, *ev_tick, *ev_deadline, *ev_sigint;

/* counters: *_win = completed inside the measured window (rates);
 * lat_* = iterations started inside the window (latency) */
static uint64_t done_win, done_total, fail_win, fail_total, no_ticket_win,
    no_ticket_total, resumed_win, full_win, timeouts, tls_fail, tcp_fail,
    refused, bad_echo, eof_early, started_win, late_starts;
static uint64_t bytes_win, bytes_total, tunnels_ready, tunnels_closed_early,
    target_accepts, target_errors, target_bad_hello;
static int in_flight, setup_started, setup_ready, setup_failed;
static int errs_printed;
static char first_status[128];
static char neg_version[32], neg_cipher[64], neg_group[32];

static struct lg_hist h_tcp, h_hs, h_done, h_200, h_echo, h_lag;

static struct psamp ps0, ps1, ps_idle0, ps_idle1;
static double cli_cpu0, cli_cpu1, mach0 = -1, mach1 = -1;
static uint64_t t_acct0, t_acct1;
static int exit_code;

static uint8_t *src_buf; /* target source / client upload data */
static char req_buf[256];
static size_t req_len;

static void finish(void);
static void conn_start(struct conn *c, uint64_t t_int);
static void drive(struct conn *c);
static void sched_fill(void);
static void pipe_io(struct conn *c, short what);

#define US(v) ((double)(v) / 1000.0)

static void
errlog(const char *why, int idx)
{
    if (errs_printed >= MAX_ERR_PRINT)
        return;
    errs_printed++;
    char ebuf[256];
    unsigned long e = ERR_peek_last_error();
    ebuf[0] = '\0';
    if (e)
        ERR_error_string_n(e, ebuf, sizeof ebuf);
    lg_log("conn %d: %s %s", idx, why, ebuf);
}

/* ------------------------------------------------------------------ */
/* server stack accounting                                              */

struct pent {
    int pid, ppid, threads;
    double cpu;
    long rss_kb;
};

/* Every process of the machine (pid, ppid, CPU incl. reaped children,
 * RSS); *n entries, returns a malloc'd array. */
static struct pent *
scan_procs(int *n)
{
    DIR *d = opendir("/proc");
    int cap = 256, cnt = 0;
    struct pent *a = lg_xrealloc(NULL, (size_t)cap * sizeof *a);
    long hz = sysconf(_SC_CLK_TCK);
    long pg = sysconf(_SC_PAGESIZE) / 1024;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[300], buf[2048];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[r] = '\0';
        char *p = strrchr(buf, ')');
        if (!p)
            continue;
        /* fields after "comm)": 3 state, 4 ppid, ... 14 utime, 15 stime,
         * 16 cutime, 17 cstime, 20 num_threads, 24 rss */
        unsigned long long v[25] = {0};
        int field = 2;
        char *save = NULL;
        for (char *tok = strtok_r(p + 1, " ", &save); tok && field < 24;
             tok = strtok_r(NULL, " ", &save)) {
            field++;
            if (field >= 4)
                v[field] = strtoull(tok, NULL, 10);
        }
        if (field < 24)
            continue;
        if (cnt == cap) {
            cap *= 2;
            a = lg_xrealloc(a, (size_t)cap * sizeof *a);
        }
        a[cnt].pid = atoi(de->d_name);
        a[cnt].ppid = (int)v[4];
        a[cnt].cpu = (double)(v[14] + v[15] + v[16] + v[17]) /
                     (double)(hz > 0 ? hz : 100);
        a[cnt].threads = (int)v[20];
        a[cnt].rss_kb = (long)v[24] * (pg > 0 ? pg : 4);
        cnt++;
    }
    if (d)
        closedir(d);
    *n = cnt;
    return a;
}

static void
stack_sample(struct psamp *s)
{
    memset(s, 0, sizeof *s);
    if (O.npids == 0) {
        s->cpu_all = s->cpu_front = -1;
        s->rss_all_kb = s->rss_front_kb = -1;
        return;
    }
    int n;
    struct pent *a = scan_procs(&n);
    bool *in = calloc((size_t)n + 1, 1);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < O.npids; k++)
            if (a[i].pid == O.pids[k])
                in[i] = true;
    /* descendants: repeat until nothing changes (depth is small) */
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = 0; i < n; i++) {
            if (in[i])
                continue;
            for (int j = 0; j < n; j++)
                if (in[j] && a[j].pid == a[i].ppid) {
                    in[i] = changed = true;
                    break;
                }
        }
    }
    for (int i = 0; i < n; i++) {
        if (!in[i])
            continue;
        s->cpu_all += a[i].cpu;
        s->rss_all_kb += a[i].rss_kb;
        s->nproc++;
        s->threads += a[i].threads;
        if (a[i].pid == O.pids[0]) {
            s->cpu_front = a[i].cpu;
            s->rss_front_kb = a[i].rss_kb;
        }
    }
    free(in);
    free(a);
}

/* ------------------------------------------------------------------ */
/* TLS                                                                  */

static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct conn *c = SSL_get_app_data(ssl);
    if (!c)
        return 0;
    c->got_ticket = true;
    if (c->sess)
        SSL_SESSION_free(c->sess);
    c->sess = sess; /* we keep the reference */
    return 1;
}

static SSL_CTX *
make_ctx(void)
{
    SSL_CTX *x = SSL_CTX_new(TLS_client_method());
    if (!x)
        return NULL;
    SSL_CTX_set_min_proto_version(x, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(x, TLS1_3_VERSION);
    if (O.ciphersuites[0] && SSL_CTX_set_ciphersuites(x, O.ciphersuites) != 1) {
        lg_log("bad --ciphersuites %s", O.ciphersuites);
        return NULL;
    }
    if (O.groups[0] && SSL_CTX_set1_groups_list(x, O.groups) != 1) {
        lg_log("bad --groups %s", O.groups);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(x, O.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(x, O.key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(x) != 1) {
        lg_log("cannot load client certificate %s / key %s", O.cert, O.key);
        ERR_print_errors_fp(stderr);
        return NULL;
    }
    if (O.verify_server) {
        if (!O.ca[0] || SSL_CTX_load_verify_locations(x, O.ca, NULL) != 1) {
            lg_log("--verify-server needs a readable --ca");
            return NULL;
        }
        SSL_CTX_set_verify(x, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(x, SSL_VERIFY_NONE, NULL);
    }
    SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_CLIENT |
                                          SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(x, on_new_session);
    /* one read() for many records when downloading */
    SSL_CTX_set_read_ahead(x, 1);
    SSL_CTX_set_default_read_buffer_len(x, 64 * 1024);
    SSL_CTX_set_mode(x, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return x;
}

/* ------------------------------------------------------------------ */
/* client connections                                                   */

static bool
use_resume(void)
{
    if (O.resume >= 0)
        return O.resume;
    return O.mode != M_HANDSHAKE;
}

static bool
looping(void) /* handshake and connect modes */
{
    return O.mode == M_HANDSHAKE || O.mode == M_CONNECT;
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg);
static void arm_timer(struct conn *c, double s);

static void
conn_close_fd(struct conn *c)
{
    if (c->ev_set) {
        event_del(&c->ev_r);
        event_del(&c->ev_w);
        event_del(&c->ev_t);
        c->ev_set = false;
        c->t_on = false;
    }
    if (c->ssl) {
        SSL_set_app_data(c->ssl, NULL);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

static bool
in_window(uint64_t t)
{
    return t >= t_meas0 && t < t_meas1 && t_meas0 != 0;
}

/* The iteration on c is over: ok (counted), failed, or (handshake mode)
 * completed without a ticket. The slot is freed or restarted. */
static void
conn_end(struct conn *c, int result) /* 1 ok, 0 fail, 2 no ticket */
{
    uint64_t now = lg_mono_ns();
    if (c->ssl && result != 0 && c->st != C_TCP) {
        /* close_notify; the socket is closed right after, unread bytes
         * (a second ticket) may turn it into a reset */
        SSL_shutdown(c->ssl);
    }
    conn_close_fd(c);
    bool win = phase == PH_MEASURE;
    if (result == 1) {
        done_total++;
        if (win)
            done_win++;
        if (c->counted_window)
            lg_h_add(&h_done, now - c->t_int);
    } else if (result == 2) {
        no_ticket_total++;
        if (win)
            no_ticket_win++;
    } else {
        fail_total++;
        if (win)
            fail_win++;
    }
    c->st = C_FREE;
    in_flight--;
    if (!looping())
        return;
    if (O.rate > 0) {
        c->free_next = free_head;
        free_head = c->idx;
        sched_fill();
    } else if (phase == PH_WARMUP || phase == PH_MEASURE) {
        if (result == 0) {
            /* no tight loop of failures: start again 10 ms later */
            c->restart = true;
            event_assign(&c->ev_t, base, -1, 0, on_conn_timer, c);
            arm_timer(c, 0.01);
        } else {
            conn_start(c, lg_mono_ns());
        }
    } else {
        c->free_next = free_head;
        free_head = c->idx;
    }
}

/* setup of one bulk/idle tunnel failed or finished */
static void setup_done_one(struct conn *c, bool ok);

static void
conn_fail(struct conn *c, const char *why)
{
    if (O.verbose || errs_printed < MAX_ERR_PRINT)
        errlog(why, c->idx);
    if (looping()) {
        conn_end(c, 0);
        return;
    }
    bool was_setup = c->st != C_PIPE && c->st != C_HOLD;
    conn_close_fd(c);
    c->st = C_FREE;
    in_flight--;
    if (was_setup)
        setup_done_one(c, false);
    else
        tunnels_closed_early++;
}

static void
arm_timer(struct conn *c, double s)
{
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (time_t)s) * 1e6)};
    event_add(&c->ev_t, &tv);
    c->t_on = true;
}

static void
on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    c->t_on = false;
    if (c->st == C_FREE && c->restart) {
        c->restart = false;
        if (phase == PH_WARMUP || phase == PH_MEASURE) {
            conn_start(c, lg_mono_ns());
        } else {
            c->free_next = free_head;
            free_head = c->idx;
        }
        return;
    }
    if (c->st == C_TICKET) {
        conn_end(c, 2);
        return;
    }
    if (c->st == C_PIPE || c->st == C_HOLD || c->st == C_FREE)
        return;
    timeouts++;
    char why[96];
    snprintf(why, sizeof why, "timed out (%s)",
             state_names[c->st == C_WRITE ? c->next : c->st]);
    if (O.verbose) {
        /* what the socket and OpenSSL hold: tells a stalled server from a
         * stalled generator */
        int nread = -1;
        ioctl(c->fd, FIONREAD, &nread);
        lg_log("conn %d: %s, socket has %d bytes unread, OpenSSL %d, "
               "%d events handled, read event %s",
               c->idx, state_names[c->st], nread,
               c->ssl ? SSL_pending(c->ssl) : -1, c->io_calls,
               event_pending(&c->ev_r, EV_READ, NULL) ? "on" : "off");
    }
    conn_fail(c, why);
}

static void
on_conn_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct conn *c = arg;
    c->io_calls++;
    if (c->st == C_PIPE) {
        /* bulk: reads and writes are handled apart */
        pipe_io(c, what);
        return;
    }
    drive(c);
}

/* Wait for what SSL asked for: true to wait, false on a real error. */
static bool
ssl_wait(struct conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return true; /* the read event is always on */
    if (e == SSL_ERROR_WANT_WRITE) {
        event_add(&c->ev_w, NULL);
        return true;
    }
    return false;
}

static void
conn_start(struct conn *c, uint64_t t_int)
{
    uint64_t now = lg_mono_ns();
    c->t_int = t_int;
    c->t_start = now;
    c->t_tls = c->t_200 = 0;
    c->got_ticket = false;
    c->head_len = c->echo_len = 0;
    c->counted_window = in_window(t_int);
    if (c->counted_window) {
        started_win++;
        if (O.rate > 0)
            lg_h_add(&h_lag, now > t_int ? now - t_int : 0);
    }
    starts_total++;
    in_flight++;
    c->fd = lg_socket((int)(iter_seq++ % 1000000), n_src);
    if (c->fd < 0) {
        c->st = C_TCP;
        tcp_fail++;
        conn_fail(c, "socket");
        return;
    }
    event_assign(&c->ev_r, base, c->fd, EV_READ | EV_PERSIST, on_conn_io, c);
    event_assign(&c->ev_w, base, c->fd, EV_WRITE, on_conn_io, c);
    event_assign(&c->ev_t, base, -1, 0, on_conn_timer, c);
    c->ev_set = true;
    c->st = C_TCP;
    arm_timer(c, O.op_timeout);
    if (connect(c->fd, (struct sockaddr *)&dst_addr, sizeof dst_addr) < 0 &&
        errno != EINPROGRESS) {
        tcp_fail++;
        conn_fail(c, "connect");
        return;
    }
    event_add(&c->ev_w, NULL);
}

static void
note_negotiated(SSL *ssl)
{
    if (neg_version[0])
        return;
    snprintf(neg_version, sizeof neg_version, "%s", SSL_get_version(ssl));
    snprintf(neg_cipher, sizeof neg_cipher, "%s", SSL_get_cipher_name(ssl));
    int nid = SSL_get_negotiated_group(ssl);
    const char *gn = nid ? OBJ_nid2sn(nid) : NULL;
    snprintf(neg_group, sizeof neg_group, "%s", gn ? gn : "?");
}

static void
make_hello(struct conn *c, char kind)
{
    char tmp[HELLO_LEN + 1];
    snprintf(tmp, sizeof tmp, "tlg1 %c %08x\n", kind,
             (unsigned)(c->idx * 2654435761u + (uint32_t)starts_total));
    memcpy(c->hello, tmp, HELLO_LEN);
}

/* a tunnel of bulk/idle mode is up (HELLO echoed) */
static void
tunnel_up(struct conn *c)
{
    if (c->t_on) {
        event_del(&c->ev_t);
        c->t_on = false;
    }
    c->st = O.mode == M_BULK ? C_PIPE : C_HOLD;
    tunnels_ready++;
    setup_done_one(c, true);
}

/* Read TLS application data into dst (up to cap): > 0 bytes, 0 would
 * block, -1 EOF or error (logged). */
static long
tls_read(struct conn *c, void *dst, size_t cap)
{
    ERR_clear_error();
    int r = SSL_read(c->ssl, dst, (int)cap);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        event_add(&c->ev_w, NULL);
        return 0;
    }
    return -1;
}

static void
drive(struct conn *c)
{
    for (;;) {
        switch (c->st) {
        case C_FREE:
            return;
        case C_TCP: {
            int err = lg_sock_error(c->fd);
            if (err == EINPROGRESS || err == EALREADY)
                return;
            if (err) {
                tcp_fail++;
                errno = err;
                conn_fail(c, strerror(err));
                return;
            }
            uint64_t now = lg_mono_ns();
            if (c->counted_window)
                lg_h_add(&h_tcp, now - c->t_int);
            c->ssl = SSL_new(ctx);
            if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                tls_fail++;
                conn_fail(c, "SSL_new");
                return;
            }
            SSL_set_app_data(c->ssl, c);
            if (O.sni[0])
                SSL_set_tlsext_host_name(c->ssl, O.sni);
            if (use_resume() && c->sess)
                SSL_set_session(c->ssl, c->sess);
            SSL_set_connect_state(c->ssl);
            c->st = C_TLS;
            event_add(&c->ev_r, NULL);
            break;
        }
        case C_TLS: {
            ERR_clear_error();
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                if (!ssl_wait(c, r)) {
                    tls_fail++;
                    conn_fail(c, "TLS handshake failed");
                }
                return;
            }
            uint64_t now = lg_mono_ns();
            c->t_tls = now;
            note_negotiated(c->ssl);
            bool reused = SSL_session_reused(c->ssl);
            if (phase == PH_MEASURE) {
                if (reused)
                    resumed_win++;
                else
                    full_win++;
            }
            if (c->counted_window)
                lg_h_add(&h_hs, now - c->t_int);
            if (O.mode == M_HANDSHAKE) {
                c->st = C_TICKET;
                event_del(&c->ev_t);
                arm_timer(c, O.ticket_wait);
                break;
            }
            c->out = (const uint8_t *)req_buf;
            c->out_len = req_len;
            c->st = C_WRITE;
            c->next = C_HEAD;
            break;
        }
        case C_TICKET: {
            /* process whatever the server sent (both tickets, usually) */
            long r;
            while ((r = tls_read(c, lg_scratch, lg_scratch_cap)) > 0)
                ;
            if (c->got_ticket) {
                conn_end(c, 1);
                return;
            }
            if (r < 0) {
                eof_early++;
                conn_fail(c, "closed before a session ticket");
            }
            return;
        }
        case C_WRITE: {
            ERR_clear_error();
            int r = SSL_write(c->ssl, c->out, (int)c->out_len);
            if (r <= 0) {
                if (!ssl_wait(c, r))
                    conn_fail(c, "write failed");
                return;
            }
            c->st = c->next;
            break;
        }
        case C_HEAD: {
            long r = tls_read(c, c->head + c->head_len,
                              sizeof c->head - 1 - c->head_len);
            if (r == 0)
                return;
            if (r < 0) {
                eof_early++;
                conn_fail(c, "closed before the CONNECT answer");
                return;
            }
            c->head_len += (size_t)r;
            c->head[c->head_len] = '\0';
            char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
            if (!end) {
                if (c->head_len >= sizeof c->head - 1) {
                    refused++;
                    conn_fail(c, "CONNECT answer head too long");
                }
                break; /* read more */
            }
            size_t hl = (size_t)(end - c->head) + 4;
            bool ok = c->head_len >= 12 && memcmp(c->head, "HTTP/1.", 7) == 0 &&
                      memcmp(c->head + 8, " 200", 4) == 0;
            if (!ok) {
                refused++;
                if (!first_status[0]) {
                    char *eol = memchr(c->head, '\r', c->head_len);
                    snprintf(first_status, sizeof first_status, "%.*s",
                             (int)(eol ? eol - c->head : 60), c->head);
                }
                conn_fail(c, "CONNECT refused");
                return;
            }
            uint64_t now = lg_mono_ns();
            c->t_200 = now;
            if (c->counted_window)
                lg_h_add(&h_200, now - c->t_int);
            /* bytes after the head are the start of the echo */
            size_t extra = c->head_len - hl;
            if (extra > HELLO_LEN) {
                bad_echo++;
                conn_fail(c, "unexpected bytes after the CONNECT answer");
                return;
            }
            memcpy(c->echo, c->head + hl, extra);
            c->echo_len = extra;
            char kind = O.mode == M_CONNECT ? 'E'
                        : O.mode == M_IDLE  ? 'H'
                        : O.upload          ? 'U'
                                            : 'D';
            make_hello(c, kind);
            c->out = c->hello;
            c->out_len = HELLO_LEN;
            c->st = C_WRITE;
            c->next = C_ECHO;
            break;
        }
        case C_ECHO: {
            if (c->echo_len < HELLO_LEN) {
                long r =
                    tls_read(c, c->echo + c->echo_len, HELLO_LEN - c->echo_len);
                if (r == 0)
                    return;
                if (r < 0) {
                    eof_early++;
                    conn_fail(c, "closed before the echo");
                    return;
                }
                c->echo_len += (size_t)r;
                if (c->echo_len < HELLO_LEN)
                    break;
            }
            if (memcmp(c->echo, c->hello, HELLO_LEN) != 0) {
                bad_echo++;
                conn_fail(c, "echo does not match");
                return;
            }
            if (O.mode == M_CONNECT) {
                if (c->counted_window)
                    lg_h_add(&h_echo, lg_mono_ns() - c->t_int);
                conn_end(c, 1);
                return;
            }
            tunnel_up(c);
            if (c->st == C_PIPE)
                pipe_io(c, EV_READ | EV_WRITE);
            return;
        }
        case C_PIPE:
            return;
        case C_HOLD: {
            long r;
            while ((r = tls_read(c, lg_scratch, lg_scratch_cap)) > 0)
                ;
            if (r < 0) {
                eof_early++;
                conn_fail(c, "idle tunnel closed");
            }
            return;
        }
        }
    }
}

/* bulk: read (download, tickets) and write (upload) */
static void
pipe_io(struct conn *c, short what)
{
    if (what & EV_READ) {
        int i;
        for (i = 0; i < READS_PER_CB; i++) {
            long r = tls_read(c, lg_scratch, lg_scratch_cap);
            if (r == 0)
                break;
            if (r < 0) {
                eof_early++;
                conn_fail(c, "tunnel closed");
                return;
            }
            if (!O.upload) {
                bytes_total += (uint64_t)r;
                if (phase == PH_MEASURE)
                    bytes_win += (uint64_t)r;
            }
        }
        /* records read ahead stay in OpenSSL, where epoll cannot see them:
         * come back on the next loop pass */
        if (i == READS_PER_CB && SSL_has_pending(c->ssl))
            event_active(&c->ev_r, EV_READ, 1);
    }
    if (O.upload && (what & EV_WRITE) && phase != PH_SETUP &&
        phase != PH_DONE) {
        for (int i = 0; i < WRITES_PER_CB; i++) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, src_buf, O.chunk);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    event_add(&c->ev_w, NULL);
                    return;
                }
                conn_fail(c, "upload write failed");
                return;
            }
        }
        event_add(&c->ev_w, NULL); /* more next time round */
    }
}

/* ------------------------------------------------------------------ */
/* the target                                                           */

static void
tconn_free(struct tconn *t)
{
    event_del(&t->ev_r);
    event_del(&t->ev_w);
    if (t->pace_on)
        event_del(&t->ev_pace);
    close(t->fd);
    free(t);
}

static void on_target_write(evutil_socket_t fd, short what, void *arg);

/* paced source: the budget is back, write again */
static void
on_target_pace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct tconn *t = arg;
    t->pace_on = false;
    event_add(&t->ev_w, NULL);
}

static void
on_target_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct tconn *t = arg;
    for (int i = 0; i < 4; i++) {
        size_t len = SRC_CHUNK;
        if (O.rate > 0) {
            /* bulk --rate: MB/s over all tunnels, each its share */
            double per = O.rate * 1e6 / nconns;
            double budget =
                per * (double)(lg_mono_ns() - t->t0) / 1e9 - (double)t->sent;
            if (budget < 16384) {
                double wait = (16384 - budget) / per;
                if (wait < 0.001)
                    wait = 0.001;
                struct timeval tv = {
                    (time_t)wait, (suseconds_t)((wait - (time_t)wait) * 1e6)};
                event_del(&t->ev_w);
                event_assign(&t->ev_pace, base, -1, 0, on_target_pace, t);
                event_add(&t->ev_pace, &tv);
                t->pace_on = true;
                return;
            }
            if (budget < (double)len)
                len = (size_t)budget;
        }
        ssize_t w = send(fd, src_buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            tconn_free(t);
            return;
        }
        t->sent += (uint64_t)w;
    }
}

static void
on_target_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct tconn *t = arg;
    for (int i = 0; i < READS_PER_CB; i++) {
        ssize_t r;
        if (t->hl < HELLO_LEN) {
            r = recv(fd, t->hello + t->hl, (size_t)(HELLO_LEN - t->hl), 0);
        } else {
            lg_scratch_reserve(0);
            r = recv(fd, lg_scratch, lg_scratch_cap, 0);
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            tconn_free(t);
            return;
        }
        if (t->hl < HELLO_LEN) {
            t->hl += (int)r;
            if (t->hl < HELLO_LEN)
                continue;
            t->kind = (char)t->hello[5];
            if (memcmp(t->hello, "tlg1 ", 5) != 0 || !strchr("EDUH", t->kind)) {
                target_bad_hello++;
                tconn_free(t);
                return;
            }
            if (send(fd, t->hello, HELLO_LEN, MSG_NOSIGNAL) != HELLO_LEN) {
                target_errors++;
                tconn_free(t);
                return;
            }
            if (t->kind == 'D') {
                t->t0 = lg_mono_ns();
                event_assign(&t->ev_w, base, fd, EV_WRITE | EV_PERSIST,
                             on_target_write, t);
                event_add(&t->ev_w, NULL);
                t->w_on = true;
            }
            continue;
        }
        if (t->kind == 'U') {
            bytes_total += (uint64_t)r;
            if (phase == PH_MEASURE)
                bytes_win += (uint64_t)r;
        } else if (t->kind == 'E' || t->kind == 'H') {
            if (send(fd, lg_scratch, (size_t)r, MSG_NOSIGNAL) != r)
                target_errors++;
        }
    }
}

static void
on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    for (int i = 0; i < 256; i++) {
        int s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                target_errors++;
                if (errs_printed < MAX_ERR_PRINT) {
                    errs_printed++;
                    lg_log("target accept: %s", strerror(errno));
                }
            }
            return;
        }
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct tconn *t = calloc(1, sizeof *t);
        if (!t) {
            close(s);
            return;
        }
        t->fd = s;
        event_assign(&t->ev_r, base, s, EV_READ | EV_PERSIST, on_target_read,
                     t);
        event_assign(&t->ev_w, base, -1, 0, NULL, NULL);
        event_add(&t->ev_r, NULL);
        target_accepts++;
    }
}

static int
target_listen(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
        return -1;
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)O.target_port);
    inet_pton(AF_INET, O.target_host, &sa.sin_addr);
    if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(listen_fd, 4096) < 0) {
        lg_log("target listen on %s:%d: %s", O.target_host, O.target_port,
               strerror(errno));
        return -1;
    }
    socklen_t sl = sizeof sa;
    getsockname(listen_fd, (struct sockaddr *)&sa, &sl);
    target_port_bound = ntohs(sa.sin_port);
    event_assign(&ev_listen, base, listen_fd, EV_READ | EV_PERSIST, on_accept,
                 NULL);
    event_add(&ev_listen, NULL);
    return 0;
}

/* ------------------------------------------------------------------ */
/* phases                                                               */

static void
arm_at(struct event *ev, uint64_t at)
{
    uint64_t now = lg_mono_ns();
    uint64_t d = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(d / 1000000000ull),
                         (suseconds_t)((d % 1000000000ull) / 1000)};
    event_add(ev, &tv);
}

static void
acct_start(void)
{
    t_acct0 = lg_mono_ns();
    stack_sample(&ps0);
    cli_cpu0 = lg_cpu_self();
    mach0 = lg_machine_busy();
}

static void
acct_end(void)
{
    t_acct1 = lg_mono_ns();
    stack_sample(&ps1);
    cli_cpu1 = lg_cpu_self();
    mach1 = lg_machine_busy();
}

/* open loop: start every iteration that is due, while slots are free */
static void
sched_fill(void)
{
    if (O.rate <= 0 || (phase != PH_WARMUP && phase != PH_MEASURE))
        return;
    uint64_t now = lg_mono_ns();
    while (free_head >= 0) {
        uint64_t t_int =
            t_run0 + (uint64_t)((double)sched_k * sched_interval_ns);
        if (t_int > now || t_int >= t_meas1)
            break;
        struct conn *c = &conns[free_head];
        free_head = c->free_next;
        sched_k++;
        if (now - t_int > 1000000)
            late_starts++;
        conn_start(c, t_int);
    }
}

static void
on_sched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (phase != PH_WARMUP && phase != PH_MEASURE)
        return;
    sched_fill();
    uint64_t next = t_run0 + (uint64_t)((double)sched_k * sched_interval_ns);
    if (next >= t_meas1)
        return;
    arm_at(ev_sched, next);
}

static void
start_traffic(void)
{
    uint64_t now = lg_mono_ns();
    t_run0 = now;
    t_meas0 = t_run0 + (uint64_t)(O.warmup * 1e9);
    t_meas1 = t_meas0 + (uint64_t)(O.duration * 1e9);
    phase = PH_WARMUP;
    if (O.warmup <= 0) {
        phase = PH_MEASURE;
        acct_start();
        arm_at(ev_phase, t_meas1);
    } else {
        arm_at(ev_phase, t_meas0);
    }
    if (!looping()) {
        /* bulk: start the uploads */
        if (O.upload)
            for (int i = 0; i < nconns; i++)
                if (conns[i].st == C_PIPE)
                    event_add(&conns[i].ev_w, NULL);
        return;
    }
    if (O.rate > 0) {
        sched_interval_ns = 1e9 / O.rate;
        sched_k = 0;
        for (int i = nconns - 1; i >= 0; i--) {
            conns[i].free_next = free_head;
            free_head = i;
        }
        arm_at(ev_sched, now);
    } else {
        for (int i = 0; i < nconns; i++)
            conn_start(&conns[i], now);
    }
}

static void
on_phase(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (phase == PH_WARMUP) {
        phase = PH_MEASURE;
        acct_start();
        arm_at(ev_phase, t_meas1);
    } else if (phase == PH_MEASURE) {
        acct_end();
        if (looping()) {
            phase = PH_DRAIN;
            arm_at(ev_phase, t_acct1 + (uint64_t)(O.drain * 1e9));
        } else {
            finish();
        }
    } else if (phase == PH_DRAIN) {
        finish();
    } else if (phase == PH_SETTLE) {
        stack_sample(&ps_idle1);
        finish();
    }
}

/* bulk / idle setup: keep --setup-concurrency tunnels being opened */
static void
setup_more(void)
{
    while (setup_started < nconns &&
           setup_started - setup_ready - setup_failed < O.setup_conc) {
        struct conn *c = &conns[setup_started++];
        conn_start(c, lg_mono_ns());
    }
}

static void
setup_done_one(struct conn *c, bool ok)
{
    (void)c;
    if (ok)
        setup_ready++;
    else
        setup_failed++;
    if (phase != PH_SETUP)
        return;
    if (setup_ready + setup_failed < nconns) {
        setup_more();
        return;
    }
    t_setup_done = lg_mono_ns();
    if (O.verbose)
        lg_log("setup: %d tunnels ready, %d failed, in %.2f s", setup_ready,
               setup_failed, (double)(t_setup_done - t_start_all) / 1e9);
    if (setup_failed) {
        lg_log("setup failed: %d of %d tunnels ready", setup_ready, nconns);
        exit_code = 1;
    }
    if (O.mode == M_IDLE) {
        phase = PH_SETTLE;
        arm_at(ev_phase, t_setup_done + (uint64_t)(O.settle * 1e9));
        return;
    }
    if (setup_ready == 0) {
        finish();
        return;
    }
    start_traffic();
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = lg_mono_ns();
    if (phase == PH_SETUP &&
        now - t_start_all > (uint64_t)(O.setup_timeout * 1e9)) {
        lg_log("setup timed out: %d ready, %d failed, %d in progress of %d",
               setup_ready, setup_failed, in_flight, nconns);
        exit_code = 1;
        finish();
    } else if (phase == PH_DRAIN && in_flight == 0) {
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

/* ------------------------------------------------------------------ */
/* report                                                               */

static void
print_hist(const char *name, const struct lg_hist *h, bool comma)
{
    printf("\"%s\":{\"n\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,"
           "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}%s",
           name, h->n, h->n ? US(h->sum / h->n) : 0, US(lg_h_pct(h, 50)),
           US(lg_h_pct(h, 90)), US(lg_h_pct(h, 99)), US(lg_h_pct(h, 99.9)),
           US(h->max), comma ? "," : "");
}

static void
report(void)
{
    bool measured = t_acct1 > t_acct0 && t_acct0 != 0;
    double win = measured ? (double)(t_acct1 - t_acct0) / 1e9 : 0;
    double srv = measured && ps0.cpu_all >= 0 ? ps1.cpu_all - ps0.cpu_all : -1;
    double front =
        measured && ps0.cpu_front >= 0 ? ps1.cpu_front - ps0.cpu_front : -1;
    double cli = measured ? cli_cpu1 - cli_cpu0 : -1;
    double mach = measured && mach0 >= 0 ? mach1 - mach0 : -1;
    double other = mach >= 0 ? mach - cli - (srv > 0 ? srv : 0) : -1;
    if (mach >= 0 && other < 0)
        other = 0;
    double units = O.mode == M_BULK ? (double)bytes_win / 1e6
                                    : (double)done_win; /* MB or ops */
    double rate = win > 0 ? units / win : 0;
    double per_cpu = srv > 0 ? units / srv : -1;
    double per_front = front > 0 ? units / front : -1;
    long rss_d = ps_idle1.rss_all_kb - ps_idle0.rss_all_kb;
    long rss_fd = ps_idle1.rss_front_kb - ps_idle0.rss_front_kb;
    int up = O.mode == M_IDLE ? (int)(tunnels_ready - tunnels_closed_early) : 0;

    if (!O.json) {
        printf("%s %s: %d conns%s, window %.2f s\n", O.label,
               mode_names[O.mode], nconns, O.rate > 0 ? " (open loop)" : "",
               win);
        if (O.mode == M_BULK)
            printf(
                "bulk %s: %.1f MB/s, %.1f MB per server CPU-s (front %.1f)\n",
                O.upload ? "upload" : "download", rate, per_cpu, per_front);
        else if (O.mode == M_IDLE)
            printf("idle: %d tunnels up, RSS %ld -> %ld KiB: %.2f KiB/tunnel\n",
                   up, ps_idle0.rss_all_kb, ps_idle1.rss_all_kb,
                   up > 0 ? (double)rss_d / up : 0);
        else
            printf("%.0f/s, %.0f per server CPU-s (front %.0f); fail %" PRIu64
                   ", no ticket %" PRIu64 "\n",
                   rate, per_cpu, per_front, fail_win, no_ticket_win);
        if (srv >= 0)
            printf("server CPU %.2f s (%.0f %%), front %.2f s; loadgen %.2f s "
                   "(%.0f %%); other %.2f s\n",
                   srv, 100 * srv / win, front, cli, 100 * cli / win, other);
        if (O.mode == M_CONNECT)
            printf("to 200: p50 %.1f p99 %.1f us; to echo: p50 %.1f p99 %.1f "
                   "us\n",
                   US(lg_h_pct(&h_200, 50)), US(lg_h_pct(&h_200, 99)),
                   US(lg_h_pct(&h_echo, 50)), US(lg_h_pct(&h_echo, 99)));
        if (O.mode == M_HANDSHAKE)
            printf("handshake: p50 %.1f p99 %.1f us; done p99 %.1f us\n",
                   US(lg_h_pct(&h_hs, 50)), US(lg_h_pct(&h_hs, 99)),
                   US(lg_h_pct(&h_done, 99)));
        printf("tls %s %s %s\n", neg_version, neg_cipher, neg_group);
        return;
    }
    printf("{\"tool\":\"tunnel-loadgen\",\"label\":\"%s\",\"mode\":\"%s\","
           "\"dir\":\"%s\",\"conns\":%d,\"loop\":\"%s\",\"rate_target\":%.1f,"
           "\"resume\":%s,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
           "\"tls_version\":\"%s\",\"cipher\":\"%s\",\"group\":\"%s\","
           "\"target_port\":%d,",
           O.label, mode_names[O.mode],
           O.mode == M_BULK ? (O.upload ? "up" : "down") : "", nconns,
           O.rate > 0 ? "open" : "closed", O.rate,
           use_resume() ? "true" : "false", win, O.warmup, neg_version,
           neg_cipher, neg_group, target_port_bound);
    printf("\"done\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"no_ticket\":%" PRIu64
           ",\"resumed\":%" PRIu64 ",\"full\":%" PRIu64 ",\"started\":%" PRIu64
           ",\"late_starts\":%" PRIu64 ",\"done_total\":%" PRIu64
           ",\"failed_total\":%" PRIu64 ",\"no_ticket_total\":%" PRIu64
           ",\"timeouts\":%" PRIu64 ",\"tcp_fail\":%" PRIu64
           ",\"tls_fail\":%" PRIu64 ",\"refused\":%" PRIu64
           ",\"first_refusal\":\"%s\",\"bad_echo\":%" PRIu64
           ",\"eof_early\":%" PRIu64 ",",
           done_win, fail_win, no_ticket_win, resumed_win, full_win,
           started_win, late_starts, done_total, fail_total, no_ticket_total,
           timeouts, tcp_fail, tls_fail, refused, first_status, bad_echo,
           eof_early);
    printf("\"bytes\":%" PRIu64 ",\"bytes_total\":%" PRIu64
           ",\"rate_per_s\":%.1f,\"per_server_cpu_s\":%.1f,"
           "\"per_front_cpu_s\":%.1f,\"server_cpu_s\":%.3f,"
           "\"front_cpu_s\":%.3f,\"server_cpu_util\":%.3f,"
           "\"client_cpu_s\":%.3f,\"client_cpu_util\":%.3f,"
           "\"machine_cpu_s\":%.3f,\"other_cpu_s\":%.3f,"
           "\"server_rss_kb\":%ld,\"front_rss_kb\":%ld,\"server_procs\":%d,"
           "\"server_threads\":%d,",
           bytes_win, bytes_total, rate, per_cpu, per_front, srv, front,
           srv >= 0 && win > 0 ? srv / win : -1, cli, win > 0 ? cli / win : -1,
           mach, other, measured ? ps1.rss_all_kb : ps_idle1.rss_all_kb,
           measured ? ps1.rss_front_kb : ps_idle1.rss_front_kb,
           measured ? ps1.nproc : ps_idle1.nproc,
           measured ? ps1.threads : ps_idle1.threads);
    printf("\"idle\":{\"tunnels\":%d,\"ready\":%" PRIu64 ",\"closed\":%" PRIu64
           ",\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,"
           "\"front_rss_before_kb\":%ld,\"front_rss_after_kb\":%ld,"
           "\"threads_before\":%d,\"threads_after\":%d,"
           "\"kb_per_tunnel\":%.3f,\"front_kb_per_tunnel\":%.3f,"
           "\"setup_s\":%.3f,\"setup_server_cpu_s\":%.3f},",
           O.mode == M_IDLE ? nconns : 0, tunnels_ready, tunnels_closed_early,
           ps_idle0.rss_all_kb, ps_idle1.rss_all_kb, ps_idle0.rss_front_kb,
           ps_idle1.rss_front_kb, ps_idle0.threads, ps_idle1.threads,
           up > 0 ? (double)rss_d / up : -1, up > 0 ? (double)rss_fd / up : -1,
           t_setup_done ? (double)(t_setup_done - t_start_all) / 1e9 : -1,
           O.mode == M_IDLE ? ps_idle1.cpu_all - ps_idle0.cpu_all : -1);
    print_hist("tcp_us", &h_tcp, true);
    print_hist("handshake_us", &h_hs, true);
    print_hist("to_200_us", &h_200, true);
    print_hist("to_echo_us", &h_echo, true);
    print_hist("done_us", &h_done, true);
    print_hist("start_lag_us", &h_lag, true);
    printf("\"target_accepts\":%" PRIu64 ",\"target_errors\":%" PRIu64
           ",\"target_bad_hello\":%" PRIu64 ",\"ok\":%s}\n",
           target_accepts, target_errors, target_bad_hello,
           exit_code == 0 ? "true" : "false");
}

static void
finish(void)
{
    if (phase == PH_DONE)
        return;
    if (phase == PH_MEASURE)
        acct_end();
    if (O.mode == M_IDLE && ps_idle1.nproc == 0 && O.npids)
        stack_sample(&ps_idle1);
    phase = PH_DONE;
    report();
    fflush(stdout);
    event_base_loopbreak(base);
}

/* ------------------------------------------------------------------ */
/* main                                                                 */

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: tunnel-loadgen --mode M --port P --cert C --key K [options]\n"
        "  --mode M            handshake | connect | bulk | idle\n"
        "  --host ADDR         proxy IPv4 address (default 127.0.0.1)\n"
        "  --port N            proxy port (TLS)\n"
        "  --cert F --key F    client certificate chain and key (PEM)\n"
        "  --ca F              CA for --verify-server\n"
        "  --verify-server     verify the server's chain (default: off; the\n"
        "                      TLS 1.3 CertificateVerify is checked anyway)\n"
        "  --sni NAME          server name sent (default p2pmesh-tunnel)\n"
        "  --ciphersuites S    TLS 1.3 suites offered "
        "(default TLS_AES_256_GCM_SHA384)\n"
        "  --groups G          key exchange groups offered (default X25519)\n"
        "  --pid PID           a process of the server stack (repeat; the\n"
        "                      first is the front); descendants included\n"
        "  --label S           name echoed in the output\n"
        "  --conns N           concurrency (handshake, connect), tunnels\n"
        "                      (bulk, idle) (default 32 / 8 / 1000)\n"
        "  --rate R            handshake/connect: new connections per second,\n"
        "                      open loop (default 0: closed loop); bulk\n"
        "                      download: MB/s over all tunnels (default 0:\n"
        "                      as fast as they go)\n"
        "  --resume / --no-resume  resume each slot's last session\n"
        "                      (default: handshake no, others yes)\n"
        "  --duration S        measured window (default 8)\n"
        "  --warmup S          traffic before the window (default 2)\n"
        "  --drain S           wait for iterations started in the window "
        "(default 3)\n"
        "  --ticket-wait S     handshake: wait for a ticket (default 0.5)\n"
        "  --op-timeout S      one iteration / tunnel setup (default 5)\n"
        "  --setup-timeout S   bulk/idle: all tunnels up (default 60)\n"
        "  --setup-concurrency N  tunnels opened at once (default 64)\n"
        "  --settle S          idle: hold before reading RSS (default 2)\n"
        "  --target-host A     target address to listen on and CONNECT to\n"
        "                      (default 127.0.0.1)\n"
        "  --target-port N     target port (default 0: any free port)\n"
        "  --dir down|up       bulk direction (default down)\n"
        "  --chunk N           upload: bytes per SSL_write (default 16384)\n"
        "  --src-addrs N       spread connections over 127.0.0.1..N "
        "(default 8)\n"
        "  --json              one JSON line with the results\n"
        "  --verbose           progress on stderr\n");
}

int
main(int argc, char **argv)
{
    lg_progname = "tunnel-loadgen";
    memset(&O, 0, sizeof O);
    snprintf(O.host, sizeof O.host, "127.0.0.1");
    snprintf(O.target_host, sizeof O.target_host, "127.0.0.1");
    snprintf(O.sni, sizeof O.sni, "p2pmesh-tunnel");
    snprintf(O.ciphersuites, sizeof O.ciphersuites, "TLS_AES_256_GCM_SHA384");
    snprintf(O.groups, sizeof O.groups, "X25519");
    O.mode = M_HANDSHAKE;
    O.conns = -1;
    O.resume = -1;
    O.duration = 8;
    O.warmup = 2;
    O.drain = 3;
    O.settle = 2;
    O.ticket_wait = 0.5;
    O.op_timeout = 5;
    O.setup_timeout = 60;
    O.setup_conc = 64;
    O.chunk = 16384;
    O.src_addrs = 8;

    enum {
        OPT_MODE = 1,
        OPT_HOST,
        OPT_PORT,
        OPT_CERT,
        OPT_KEY,
        OPT_CA,
        OPT_VERIFY,
        OPT_SNI,
        OPT_SUITES,
        OPT_GROUPS,
        OPT_PID,
        OPT_LABEL,
        OPT_CONNS,
        OPT_RATE,
        OPT_RESUME,
        OPT_NORESUME,
        OPT_DURATION,
        OPT_WARMUP,
        OPT_DRAIN,
        OPT_TICKET,
        OPT_OPTO,
        OPT_SETUPTO,
        OPT_SETUPC,
        OPT_SETTLE,
        OPT_THOST,
        OPT_TPORT,
        OPT_DIR,
        OPT_CHUNK,
        OPT_SRC,
        OPT_JSON,
        OPT_REMOTE,
        OPT_VERBOSE,
        OPT_HELP
    };
    static const struct option lo[] = {
        {"mode", required_argument, 0, OPT_MODE},
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"cert", required_argument, 0, OPT_CERT},
        {"key", required_argument, 0, OPT_KEY},
        {"ca", required_argument, 0, OPT_CA},
        {"verify-server", no_argument, 0, OPT_VERIFY},
        {"sni", required_argument, 0, OPT_SNI},
        {"ciphersuites", required_argument, 0, OPT_SUITES},
        {"groups", required_argument, 0, OPT_GROUPS},
        {"pid", required_argument, 0, OPT_PID},
        {"label", required_argument, 0, OPT_LABEL},
        {"conns", required_argument, 0, OPT_CONNS},
        {"rate", required_argument, 0, OPT_RATE},
        {"resume", no_argument, 0, OPT_RESUME},
        {"no-resume", no_argument, 0, OPT_NORESUME},
        {"duration", required_argument, 0, OPT_DURATION},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"drain", required_argument, 0, OPT_DRAIN},
        {"ticket-wait", required_argument, 0, OPT_TICKET},
        {"op-timeout", required_argument, 0, OPT_OPTO},
        {"setup-timeout", required_argument, 0, OPT_SETUPTO},
        {"setup-concurrency", required_argument, 0, OPT_SETUPC},
        {"settle", required_argument, 0, OPT_SETTLE},
        {"target-host", required_argument, 0, OPT_THOST},
        {"target-port", required_argument, 0, OPT_TPORT},
        {"dir", required_argument, 0, OPT_DIR},
        {"chunk", required_argument, 0, OPT_CHUNK},
        {"src-addrs", required_argument, 0, OPT_SRC},
        {"json", no_argument, 0, OPT_JSON},
        {"allow-remote", no_argument, 0, OPT_REMOTE},
        {"verbose", no_argument, 0, OPT_VERBOSE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case OPT_MODE: {
            int m = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, mode_names[i]) == 0)
                    m = i;
            if (m < 0) {
                lg_log("unknown mode %s", optarg);
                return 2;
            }
            O.mode = (enum mode)m;
            break;
        }
        case OPT_HOST:
            snprintf(O.host, sizeof O.host, "%s", optarg);
            break;
        case OPT_PORT:
            O.port = (int)lg_parse_num(optarg, "--port");
            break;
        case OPT_CERT:
            snprintf(O.cert, sizeof O.cert, "%s", optarg);
            break;
        case OPT_KEY:
            snprintf(O.key, sizeof O.key, "%s", optarg);
            break;
        case OPT_CA:
            snprintf(O.ca, sizeof O.ca, "%s", optarg);
            break;
        case OPT_VERIFY:
            O.verify_server = true;
            break;
        case OPT_SNI:
            snprintf(O.sni, sizeof O.sni, "%s", optarg);
            break;
        case OPT_SUITES:
            snprintf(O.ciphersuites, sizeof O.ciphersuites, "%s", optarg);
            break;
        case OPT_GROUPS:
            snprintf(O.groups, sizeof O.groups, "%s", optarg);
            break;
        case OPT_PID:
            if (O.npids == MAX_PIDS) {
                lg_log("at most %d --pid", MAX_PIDS);
                return 2;
            }
            O.pids[O.npids++] = (int)lg_parse_num(optarg, "--pid");
            break;
        case OPT_LABEL:
            snprintf(O.label, sizeof O.label, "%s", optarg);
            break;
        case OPT_CONNS:
            O.conns = (int)lg_parse_num(optarg, "--conns");
            break;
        case OPT_RATE:
            O.rate = lg_parse_num(optarg, "--rate");
            break;
        case OPT_RESUME:
            O.resume = 1;
            break;
        case OPT_NORESUME:
            O.resume = 0;
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
        case OPT_TICKET:
            O.ticket_wait = lg_parse_num(optarg, "--ticket-wait");
            break;
        case OPT_OPTO:
            O.op_timeout = lg_parse_num(optarg, "--op-timeout");
            break;
        case OPT_SETUPTO:
            O.setup_timeout = lg_parse_num(optarg, "--setup-timeout");
            break;
        case OPT_SETUPC:
            O.setup_conc = (int)lg_parse_num(optarg, "--setup-concurrency");
            break;
        case OPT_SETTLE:
            O.settle = lg_parse_num(optarg, "--settle");
            break;
        case OPT_THOST:
            snprintf(O.target_host, sizeof O.target_host, "%s", optarg);
            break;
        case OPT_TPORT:
            O.target_port = (int)lg_parse_num(optarg, "--target-port");
            break;
        case OPT_DIR:
            if (strcmp(optarg, "up") == 0)
                O.upload = true;
            else if (strcmp(optarg, "down") == 0)
                O.upload = false;
            else {
                lg_log("--dir: up or down");
                return 2;
            }
            break;
        case OPT_CHUNK:
            O.chunk = (int)lg_parse_num(optarg, "--chunk");
            break;
        case OPT_SRC:
            O.src_addrs = (int)lg_parse_num(optarg, "--src-addrs");
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
    if (O.conns < 0)
        O.conns = O.mode == M_BULK ? 8 : O.mode == M_IDLE ? 1000 : 32;
    if (!O.label[0])
        snprintf(O.label, sizeof O.label, "server");
    if (O.port <= 0 || O.port > 65535 || O.conns < 1 || O.conns > 9000 ||
        O.duration <= 0 || O.duration > 600 || O.warmup > 600 || O.drain > 60 ||
        O.settle > 600 || O.ticket_wait <= 0 || O.ticket_wait > 10 ||
        O.op_timeout <= 0 || O.op_timeout > 60 || O.setup_timeout <= 0 ||
        O.setup_timeout > 600 || O.setup_conc < 1 || O.chunk < 1 ||
        O.chunk > 16384 || O.target_port > 65535 || O.src_addrs < 1 ||
        O.src_addrs > 250 || O.rate > 1e6) {
        lg_log("option out of range (see --help)");
        return 2;
    }
    if (!O.cert[0] || !O.key[0]) {
        lg_log("--cert and --key are required");
        return 2;
    }
    memset(&dst_addr, 0, sizeof dst_addr);
    dst_addr.sin_family = AF_INET;
    dst_addr.sin_port = htons((uint16_t)O.port);
    struct in_addr ta;
    if (inet_pton(AF_INET, O.host, &dst_addr.sin_addr) != 1 ||
        inet_pton(AF_INET, O.target_host, &ta) != 1) {
        lg_log("--host and --target-host must be IPv4 addresses");
        return 2;
    }
    if (((ntohl(dst_addr.sin_addr.s_addr) >> 24) != 127 ||
         (ntohl(ta.s_addr) >> 24) != 127) &&
        !O.allow_remote) {
        lg_log("refusing non-loopback addresses (see --allow-remote)");
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    nconns = O.conns;
    /* every tunnel holds two fds here: the client side and the target's */
    if ((rlim_t)nconns * 2 + 64 > rl.rlim_cur) {
        lg_log("%d connections need more than the fd limit %llu", nconns,
               (unsigned long long)rl.rlim_cur);
        return 2;
    }
    n_src = looping() ? O.src_addrs : 1;
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
    ctx = make_ctx();
    if (!ctx)
        return 2;
    lg_bufs_init(0);
    src_buf = lg_xrealloc(NULL, SRC_CHUNK);
    for (size_t i = 0; i < SRC_CHUNK; i++)
        src_buf[i] = (uint8_t)lg_rng32();
    if (target_listen() < 0)
        return 1;
    req_len = (size_t)snprintf(req_buf, sizeof req_buf,
                               "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                               O.target_host, target_port_bound, O.target_host,
                               target_port_bound);

    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) {
        lg_log("out of memory");
        return 1;
    }
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].idx = i;
        conns[i].free_next = -1;
    }

    ev_sched = evtimer_new(base, on_sched, NULL);
    ev_phase = evtimer_new(base, on_phase, NULL);
    ev_tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    ev_deadline = evtimer_new(base, on_deadline, NULL);
    ev_sigint = evsignal_new(base, SIGINT, on_sigint, NULL);
    evsignal_add(ev_sigint, NULL);
    struct timeval tick = {0, 100000};
    event_add(ev_tick, &tick);
    double total =
        O.setup_timeout + O.warmup + O.duration + O.drain + O.settle + 15;
    struct timeval dl = {(time_t)total, 0};
    event_add(ev_deadline, &dl);

    t_start_all = lg_mono_ns();
    if (looping()) {
        start_traffic();
    } else {
        stack_sample(&ps_idle0);
        setup_more();
    }
    event_base_dispatch(base);

    /* no cleanup of the connections: the process exits */
    SSL_CTX_free(ctx);
    return exit_code;
}
