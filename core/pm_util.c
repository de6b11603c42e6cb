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
pm_wall_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000ull;
}

uint64_t
pm_wall_us(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000ull;
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
pm_hex_encode(const void *data, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = data;
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
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

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
pm_percent_decode(const char *s, size_t n, bool plus_space, char *out,
                  size_t outlen)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];

        if (c == '+' && plus_space) {
            c = ' ';
        } else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
                   hexval(s[i + 2]) >= 0) {
            c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
            i += 2;
        }
        if (o + 1 >= outlen)
            return PM_ELIMIT;
        out[o++] = (char)c;
    }
    if (outlen == 0)
        return PM_ELIMIT;
    out[o] = '\0';
    return PM_OK;
}

bool
pm_strcaseeq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

bool
pm_list_has(const char *list, const char *item, size_t len)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);

        while (*p == ' ')
            p++;
        while (e > p && e[-1] == ' ')
            e--;
        if ((size_t)(e - p) == len && memcmp(p, item, len) == 0)
            return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

bool
pm_json_controls_ok(const char *s, size_t n)
{
    bool in_string = false;
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (in_string) {
            if (ch < 0x20)
                return false;
            if (ch == '\\')
                i++; /* an escaped character never ends the string */
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') {
            return false;
        }
    }
    return true;
}
