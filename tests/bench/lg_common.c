/* lg_common.c: the code pm-loadgen.c and chat-loadgen.c share (see
 * lg_common.h for what it owns). */
#define _GNU_SOURCE
#include "lg_common.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const char *lg_progname = "loadgen";
uint8_t *lg_scratch;
size_t lg_scratch_cap;
/* shared send buffer: a 14-byte header slot, then the payload */
static uint8_t *sbuf;
static size_t sbuf_cap;
static uint64_t rng_state;

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

uint64_t
lg_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void
lg_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(lg_progname, stderr);
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void *
lg_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        lg_log("out of memory (%zu bytes)", n);
        exit(1);
    }
    return q;
}

void
lg_rng_seed(void)
{
    if (RAND_bytes((unsigned char *)&rng_state, sizeof rng_state) != 1 ||
        rng_state == 0)
        rng_state = lg_mono_ns() | 1;
}

/* xorshift64*: frame masking keys (RFC 6455 wants unpredictable keys;
 * the seed comes from RAND_bytes, which is plenty for a load generator). */
uint32_t
lg_rng32(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

size_t
lg_fmt_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

double
lg_parse_num(const char *s, const char *name)
{
    char *e;
    double v = strtod(s, &e);
    if (e == s || *e || v < 0 || !isfinite(v)) {
        lg_log("bad value for %s: %s", name, s);
        exit(2);
    }
    return v;
}

/* ------------------------------------------------------------------ */
/* accounting                                                           */

double
lg_cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime+stime of a process (all threads), seconds; -1 if unreadable. */
double
lg_proc_cpu(int pid)
{
    char path[64], buf[2048];
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    /* after "comm)": state(3) ppid pgrp session tty tpgid flags minflt
     * cminflt majflt cmajflt utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok && field < 15;
         tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15)
            st = strtoull(tok, NULL, 10);
    }
    if (field < 15)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/* VmRSS of a process in KiB; -1 if unreadable. */
long
lg_proc_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* Busy CPU-seconds of the whole machine (all CPUs) from /proc/stat. */
double
lg_machine_busy(void)
{
    char line[512];
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    double busy = -1;
    if (fgets(line, sizeof line, f) && strncmp(line, "cpu ", 4) == 0) {
        unsigned long long v[10] = {0};
        int n = sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu",
                       &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
        if (n >= 5) {
            /* user nice system idle iowait irq softirq steal */
            unsigned long long b = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            long hz = sysconf(_SC_CLK_TCK);
            busy = (double)b / (double)(hz > 0 ? hz : 100);
        }
    }
    fclose(f);
    return busy;
}

/* ------------------------------------------------------------------ */
/* log-linear histogram                                                 */

#define H_SUB_BITS 6
#define H_SUB (1u << H_SUB_BITS)

static unsigned
h_index(uint64_t v)
{
    if (v < 2 * H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - H_SUB_BITS;
    uint64_t m = v >> shift;
    return 2 * H_SUB + (shift - 1) * H_SUB + (unsigned)(m - H_SUB);
}

static uint64_t
h_upper(unsigned idx)
{
    if (idx < 2 * H_SUB)
        return idx;
    unsigned shift = (idx - 2 * H_SUB) / H_SUB + 1;
    uint64_t m = (idx - 2 * H_SUB) % H_SUB + H_SUB;
    return ((m + 1) << shift) - 1;
}

void
lg_h_add(struct lg_hist *h, uint64_t v)
{
    h->b[h_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/* value at percentile p (0..100): upper edge of its bucket, <= max */
uint64_t
lg_h_pct(const struct lg_hist *h, double p)
{
    if (h->n == 0)
        return 0;
    double wf = p / 100.0 * (double)h->n;
    uint64_t want = (uint64_t)wf;
    if ((double)want < wf)
        want++; /* ceil without libm */
    if (want < 1)
        want = 1;
    uint64_t cum = 0;
    for (unsigned i = 0; i < sizeof h->b / sizeof h->b[0]; i++) {
        cum += h->b[i];
        if (cum >= want) {
            uint64_t u = h_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------ */
/* WebSocket client                                                     */

/* A fresh Sec-WebSocket-Key: base64 of 16 random bytes (24 characters). */
void
lg_ws_key(char key[32])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, 16) != 1)
        for (int i = 0; i < 16; i++)
            raw[i] = (unsigned char)lg_rng32();
    EVP_EncodeBlock((unsigned char *)key, raw, 16);
}

/* HTTP 101 head in p[0..n) answering an upgrade sent with key: returns
 * the head length, 0 if incomplete, -1 bad. While *errs_printed <
 * max_print, why it is bad is logged for connection idx (and counted). */
long
lg_ws_upgrade(const uint8_t *p, size_t n, const char *key, int idx,
              int *errs_printed, int max_print)
{
    const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > LG_MAX_HTTP_HEAD)
            return -1;
        return 0;
    }
    size_t hl = (size_t)(end - p) + 4;
    if (hl < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
        if (*errs_printed < max_print) {
            (*errs_printed)++;
            const uint8_t *eol = memmem(p, hl, "\r\n", 2);
            lg_log("conn %d: upgrade refused: %.*s", idx,
                   (int)(eol ? eol - p : 40), (const char *)p);
        }
        return -1;
    }
    /* expected accept = base64(SHA1(key + GUID)) */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char cat[128];
    int cl = snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    EVP_Digest(cat, (size_t)cl, md, &mdlen, EVP_sha1(), NULL);
    unsigned char want[64];
    EVP_EncodeBlock(want, md, (int)mdlen);
    bool up = false, conn_up = false, acc_ok = false;
    /* walk header lines */
    const uint8_t *line = memmem(p, hl, "\r\n", 2) + 2;
    while (line < p + hl - 2) {
        const uint8_t *eol = memmem(line, (size_t)(p + hl - line), "\r\n", 2);
        if (!eol)
            break;
        const uint8_t *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            size_t nl = (size_t)(colon - line);
            const uint8_t *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(eol - v);
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (nl == 7 && strncasecmp((const char *)line, "upgrade", 7) == 0)
                up = vl == 9 &&
                     strncasecmp((const char *)v, "websocket", 9) == 0;
            else if (nl == 10 &&
                     strncasecmp((const char *)line, "connection", 10) == 0)
                conn_up = memmem(v, vl, "pgrade", 6) != NULL; /* Upgrade */
            else if (nl == 20 && strncasecmp((const char *)line,
                                             "sec-websocket-accept", 20) == 0)
                acc_ok = vl == strlen((char *)want) && memcmp(v, want, vl) == 0;
        }
        line = eol + 2;
    }
    if (!up || !conn_up || !acc_ok) {
        if (*errs_printed < max_print) {
            (*errs_printed)++;
            lg_log("conn %d: bad 101 (upgrade %d, connection %d, accept %d)",
                   idx, up, conn_up, acc_ok);
        }
        return -1;
    }
    return (long)hl;
}

/*
 * One masked client frame is built in the shared send buffer: the payload
 * goes after a 14-byte header slot (lg_frame_slot), and lg_frame_seal
 * writes the header right before it and masks the payload, so header +
 * payload leave in one send().
 */
uint8_t *
lg_frame_slot(size_t len)
{
    if (14 + len > sbuf_cap) {
        sbuf_cap = 14 + len + 4096;
        sbuf = lg_xrealloc(sbuf, sbuf_cap);
    }
    return sbuf + 14;
}

/* The frame of len payload bytes in the slot: its start, *n its length. */
const uint8_t *
lg_frame_seal(uint8_t opcode, size_t len, size_t *n)
{
    uint8_t *pl = sbuf + 14;
    size_t hl = 2 + 4 + (len < 126 ? 0 : len <= 0xFFFF ? 2 : 8);
    uint8_t *h = pl - hl;
    h[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[1] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    uint32_t key = lg_rng32();
    uint8_t mk[4];
    memcpy(mk, &key, 4);
    memcpy(pl - 4, mk, 4);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t w;
        memcpy(&w, pl + i, 4);
        w ^= key;
        memcpy(pl + i, &w, 4);
    }
    for (; i < len; i++)
        pl[i] ^= mk[i & 3];
    *n = hl + len;
    return h;
}

/* The frame at p[0..n): 1 when it is complete (*f filled, a masked payload
 * unmasked in place: servers must not mask, the caller counts it), 0 when
 * more bytes are needed, -1 on a protocol error (reserved bits, since no
 * extensions were negotiated, or a payload above LG_MAX_FRAME). */
int
lg_frame_head(uint8_t *p, size_t n, struct lg_frame *f)
{
    if (n < 2)
        return 0;
    uint8_t b0 = p[0], b1 = p[1];
    f->fin = b0 & 0x80;
    f->op = b0 & 0x0F;
    f->masked = b1 & 0x80;
    f->plen = b1 & 0x7F;
    f->hl = 2;
    if (b0 & 0x70)
        return -1;
    if (f->plen == 126) {
        if (n < 4)
            return 0;
        f->plen = (uint64_t)p[2] << 8 | p[3];
        f->hl = 4;
    } else if (f->plen == 127) {
        if (n < 10)
            return 0;
        f->plen = 0;
        for (int i = 0; i < 8; i++)
            f->plen = f->plen << 8 | p[2 + i];
        f->hl = 10;
    }
    if (f->masked)
        f->hl += 4;
    if (f->plen > LG_MAX_FRAME)
        return -1;
    if (n < f->hl + f->plen)
        return 0;
    if (f->masked) {
        uint8_t *d = p + f->hl;
        const uint8_t *mk = d - 4;
        for (uint64_t i = 0; i < f->plen; i++)
            d[i] ^= mk[i & 3];
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* I/O                                                                  */

/* Make the shared read buffer hold have leftover bytes and 64 KiB more. */
void
lg_scratch_reserve(size_t have)
{
    if (have + 65536 > lg_scratch_cap) {
        lg_scratch_cap = have * 2 + LG_SCRATCH_MIN;
        lg_scratch = lg_xrealloc(lg_scratch, lg_scratch_cap);
    }
}

/* Keep the n unparsed bytes at rest in a connection's input buffer. */
void
lg_keep_input(uint8_t **in, size_t *in_len, size_t *in_cap, const uint8_t *rest,
              size_t n)
{
    *in_len = n;
    if (n) {
        if (n > *in_cap) {
            *in_cap = n + 1024;
            *in = lg_xrealloc(*in, *in_cap);
        }
        memmove(*in, rest, n);
    } else if (*in_cap > 16384) {
        free(*in);
        *in = NULL;
        *in_cap = 0;
    }
}

/* A non-blocking TCP socket with TCP_NODELAY for connection idx, bound to
 * 127.0.0.<1 + idx % n_src> when n_src > 1; -1 (logged) on failure. */
int
lg_socket(int idx, int n_src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lg_log("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (n_src > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(idx % n_src));
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            lg_log("bind 127.0.0.%d: %s", 1 + idx % n_src, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* The pending error of a non-blocking connect (0: connected). */
int
lg_sock_error(int fd)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    return err;
}

/* The shared buffers, the send buffer sized for payload bytes. */
void
lg_bufs_init(size_t payload)
{
    lg_scratch_cap = LG_SCRATCH_MIN;
    lg_scratch = lg_xrealloc(NULL, lg_scratch_cap);
    sbuf_cap = 14 + payload + 4096;
    sbuf = lg_xrealloc(NULL, sbuf_cap);
}

void
lg_bufs_free(void)
{
    free(lg_scratch);
    free(sbuf);
}
