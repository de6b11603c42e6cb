/*
 * pm_http: a strict, bounded HTTP/1.1 request-head parser and a response
 * writer. The parser is a pure function over a contiguous buffer, so unit
 * tests and fuzzers need no sockets. It rejects what request smuggling and
 * slowloris rely on: bare LF or CR, NUL, obs-fold, whitespace before the
 * colon, Content-Length together with Transfer-Encoding, conflicting
 * Content-Length, unknown transfer codings, heads over the size limit.
 */
#ifndef PM_HTTP_H
#define PM_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define PM_HTTP_MAX_HEADERS 100

struct pm_http_header {
    const char *name; /* points into the parsed buffer, not NUL-ended */
    size_t name_len;
    const char *value; /* leading/trailing OWS trimmed */
    size_t value_len;
};

struct pm_http_request {
    const char *method; /* points into the parsed buffer */
    size_t method_len;
    const char *target; /* request-target as sent */
    size_t target_len;
    const char *path; /* target up to '?' */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    int minor; /* HTTP/1.<minor> */
    struct pm_http_header headers[PM_HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* per version and Connection header */
    bool upgrade_websocket; /* Upgrade: websocket + Connection: upgrade */
    size_t head_len;        /* bytes of the head including the blank line */
};

/*
 * Parse a request head from buf[0..len). Returns PM_OK with *req filled
 * (pointers into buf), PM_EAGAIN when the head is incomplete and still
 * within max_head, or PM_EPROTO with *status set to the HTTP status to
 * answer (400, 414, 431, 501, 505).
 */
int pm_http_parse(const char *buf, size_t len, size_t max_head,
                  struct pm_http_request *req, int *status);

/* First header with this name (case-insensitive), or NULL. */
const struct pm_http_header *
pm_http_header_get(const struct pm_http_request *req, const char *name);
/* True if a comma-separated header value list contains token (ci). */
bool pm_http_header_has_token(const struct pm_http_header *h,
                              const char *token);
/*
 * Copy the decoded value of query parameter name into out (NUL-ended,
 * %XX and '+' decoded). Returns PM_OK, PM_ENOTFOUND or PM_ELIMIT when
 * the value does not fit in outlen.
 */
int pm_http_query_param(const struct pm_http_request *req, const char *name,
                        char *out, size_t outlen);

/* The standard reason phrase for a status ("Not Found"). */
const char *pm_http_reason(int status);

/*
 * Append a complete response to out: status line, Date, Server,
 * Content-Type (if body_len or ctype), Content-Length, Connection
 * (keep-alive or close), extra headers (already "Name: value\r\n" lines,
 * may be NULL), then the body (may be NULL when body_len is 0). For HEAD
 * pass head_only to omit the body but keep its length.
 */
void pm_http_write_response(struct evbuffer *out, int status, const char *ctype,
                            const char *extra_headers, const void *body,
                            size_t body_len, bool keep_alive, bool head_only);

#endif
