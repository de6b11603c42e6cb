/*
 * pm_util: the bottom of the core. Error codes shared by every module,
 * allocation that aborts on out-of-memory (tmux xmalloc style), clocks,
 * random ids and small string helpers. No dependency beyond libc and
 * OpenSSL's RAND_bytes.
 */
#ifndef PM_UTIL_H
#define PM_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The one error convention: 0 is success, failures are negative. */
enum pm_err {
    PM_OK = 0,
    PM_EINVAL = -1,     /* bad argument or value */
    PM_ENOMEM = -2,     /* allocation refused (network-sized only) */
    PM_EIO = -3,        /* system or library I/O failure */
    PM_EPROTO = -4,     /* peer broke the protocol */
    PM_EAGAIN = -5,     /* incomplete input: call again with more */
    PM_ECLOSED = -6,    /* object already closed */
    PM_ETIMEDOUT = -7,  /* deadline passed */
    PM_EUNAVAIL = -8,   /* dependency unreachable */
    PM_ELIMIT = -9,     /* a configured limit was hit */
    PM_ENOTFOUND = -10, /* no such thing */
    PM_ECONFLICT = -11  /* already exists (a unique constraint) */
};

#define PM_ERRMSG_SIZE 256

/* The program version (PACKAGE_VERSION), for banners and /health. */
extern const char pm_version[];

/* Abort with a fatal log line when an internal invariant breaks. */
#define PM_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond))                                                           \
            pm_assert_fail(#cond, __FILE__, __LINE__);                         \
    } while (0)
void pm_assert_fail(const char *what, const char *file, int line)
    __attribute__((noreturn));

/* Allocation that never returns NULL: out of memory aborts the process. */
void *pm_xmalloc(size_t size);
void *pm_xcalloc(size_t n, size_t size);
void *pm_xrealloc(void *p, size_t size);
char *pm_xstrdup(const char *s);
char *pm_xstrndup(const char *s, size_t n);
char *pm_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic milliseconds (CLOCK_MONOTONIC) and wall-clock milliseconds. */
uint64_t pm_now_ms(void);
uint64_t pm_wall_ms(void);
uint64_t pm_wall_us(void); /* wall clock, microseconds */

/* Cryptographically random bytes; aborts if the RNG fails. */
void pm_random_bytes(void *buf, size_t n);

/* Lower-case hex of data[0..n) into out (2n+1 bytes, NUL-ended). */
void pm_hex_encode(const void *data, size_t n, char *out);

/* Copy at most size-1 bytes and NUL-terminate; returns strlen(src). */
size_t pm_strlcpy(char *dst, const char *src, size_t size);
/* snprintf into an error buffer (NULL-safe); returns the code given. */
int pm_errf(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/*
 * Decode %XX escapes of s[0..n) (and '+' as a space when plus_space) into
 * out, NUL-ended; a '%' without two hex digits stays as it is. PM_OK, or
 * PM_ELIMIT when out (outlen bytes) is too small.
 */
int pm_percent_decode(const char *s, size_t n, bool plus_space, char *out,
                      size_t outlen);
/* Does the comma-separated list (spaces around items ignored) hold
 * item[0..len) exactly? */
bool pm_list_has(const char *list, const char *item, size_t len);
/* Case-insensitive compare of a counted string with a C string. */
bool pm_strcaseeq(const char *s, size_t len, const char *lit);
/*
 * Whether s[0..n) keeps RFC 8259's rules on control characters, which
 * cJSON's parser does not enforce: none (U+0000..U+001F) inside a
 * string, and outside strings only the whitespace TAB, LF and CR. A text
 * that passes and that cJSON parses can be relayed verbatim to strict
 * peers (a browser's JSON.parse).
 */
bool pm_json_controls_ok(const char *s, size_t n);

#endif
