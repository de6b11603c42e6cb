/*
 * lg_common.h: what the benchmark load generators pm-loadgen.c (signaling)
 * and chat-loadgen.c (chat) share, linked statically into both.
 *
 * It owns the protocol-neutral parts: logging and allocation with the
 * program's name, the masking-key RNG, the clock, CPU and memory
 * accounting from /proc, the latency histogram, number options, and the
 * client side of RFC 6455 that knows no connection state: the upgrade
 * key, the 101 response check (Sec-WebSocket-Accept), building masked
 * frames in one shared send buffer, decoding frame headers, the shared
 * read buffer and the TCP socket setup. Connections, their states and
 * counters, and every protocol message stay in each generator.
 */
#ifndef LG_COMMON_H
#define LG_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_MAX_FRAME (16u << 20)    /* refuse server frames above 16 MiB */
#define LG_MAX_HTTP_HEAD 16384      /* 101 response head limit */
#define LG_SCRATCH_MIN (256u << 10) /* shared read buffer */

/* The request headers after the request line and Host of an upgrade;
 * the one argument left is the Sec-WebSocket-Key. */
#define LG_WS_UPGRADE_HEADERS                                                  \
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"                            \
    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"                   \
    "\r\n"

/* prefix of every lg_log line ("<name>: ") */
extern const char *lg_progname;

/* small helpers */
uint64_t lg_mono_ns(void);
void lg_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *lg_xrealloc(void *p, size_t n);
void lg_rng_seed(void);
uint32_t lg_rng32(void);
size_t lg_fmt_u64(char *p, uint64_t v);
double lg_parse_num(const char *s, const char *name);

/* accounting */
double lg_cpu_self(void);
double lg_proc_cpu(int pid);
long lg_proc_rss_kb(int pid);
double lg_machine_busy(void);

/* log-linear histogram: exact below 128, then 64 linear sub-buckets per
 * power of two (relative error < 1.6 %) */
struct lg_hist {
    uint64_t n, sum, max;
    uint64_t b[3776];
};
void lg_h_add(struct lg_hist *h, uint64_t v);
uint64_t lg_h_pct(const struct lg_hist *h, double p);

/* WebSocket client */
void lg_ws_key(char key[32]);
long lg_ws_upgrade(const uint8_t *p, size_t n, const char *key, int idx,
                   int *errs_printed, int max_print);
uint8_t *lg_frame_slot(size_t len);
const uint8_t *lg_frame_seal(uint8_t opcode, size_t len, size_t *n);

struct lg_frame {
    bool fin, masked;
    uint8_t op;
    size_t hl;     /* header bytes */
    uint64_t plen; /* payload bytes */
};
int lg_frame_head(uint8_t *p, size_t n, struct lg_frame *f);

/* I/O */
extern uint8_t *lg_scratch;
extern size_t lg_scratch_cap;
void lg_scratch_reserve(size_t have);
void lg_keep_input(uint8_t **in, size_t *in_len, size_t *in_cap,
                   const uint8_t *rest, size_t n);
int lg_socket(int idx, int n_src);
int lg_sock_error(int fd);
void lg_bufs_init(size_t payload);
void lg_bufs_free(void);

#endif
