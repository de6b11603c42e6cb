/*
 * pm_util: error texts, aborting allocators, clocks, random ids, string
 * helpers. Thread-safe: nothing here keeps state.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "pm_log.h"
#include "pm_util.h"

const char pm_version[] = PACKAGE_VERSION;

const char *
pm_strerror(int err)
{
    switch (err) {
    case PM_OK:
        return "ok";
    case PM_EINVAL:
        return "invalid argument";
    case PM_ENOMEM:
        return "out of memory";
    case PM_EIO:
        return "input/output error";
    case PM_EPROTO:
        return "protocol error";
    case PM_EAGAIN:
        return "incomplete";
    case PM_ECLOSED:
        return "closed";
    case PM_ETIMEDOUT:
        return "timed out";
    case PM_EUNAVAIL:
        return "unavailable";
    case PM_ELIMIT:
        return "limit reached";
    case PM_ENOTFOUND:
        return "not found";
    }
    return "unknown error";
}

void
pm_assert_fail(const char *what, const char *file, int line)
{
    char where[64];

    snprintf(where, sizeof where, "%s:%d", file, line);
    pm_log_kv(PM_LOG_FATAL, "assertion_failed", what, "where", where, NULL);
    abort();
}

static void
oom(size_t size)
{
    /* No allocation from here on: write(2)-level output only. */
    fprintf(stderr, "p2pmesh: out of memory allocating %zu bytes\n", size);
    abort();
}

void *
pm_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);

    if (p == NULL)
        oom(size);
    return p;
}

void *
pm_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        oom(n * size);
    return p;
}

void *
pm_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);

    if (q == NULL)
        oom(size);
    return q;
}

char *
pm_xstrdup(const char *s)
{
    return pm_xstrndup(s, strlen(s));
}

char *
pm_xstrndup(const char *s, size_t n)
{
    char *p = pm_xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
pm_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p;

    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0)
        oom(strlen(fmt));
    va_end(ap);
    return p;
}

static uint64_t
clock_ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t
pm_now_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000ull;
}

uint64_t
pm_now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

uint64_t
pm_wall_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000ull;
}

void
pm_random_bytes(void *buf, size_t n)
{
    if (RAND_bytes(buf, (int)n) != 1) {
        fprintf(stderr, "p2pmesh: random number generator failed\n");
        abort();
    }
}

void
pm_random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[64];
    size_t i, done = 0;

    while (done < n) {
        size_t k = n - done < sizeof b ? n - done : sizeof b;

        pm_random_bytes(b, k);
        for (i = 0; i < k; i++) {
            out[2 * (done + i)] = hex[b[i] >> 4];
            out[2 * (done + i) + 1] = hex[b[i] & 15];
        }
        done += k;
    }
    out[2 * n] = '\0';
}

void
pm_uuid_v4(char out[37])
{
    unsigned char b[16];

    pm_random_bytes(b, sizeof b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
}

size_t
pm_strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);

    if (size > 0) {
        size_t n = len < size - 1 ? len : size - 1;

        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

int
pm_errf(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

bool
pm_strcaseeq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}
