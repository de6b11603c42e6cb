/*
 * pm_http: strict, bounded HTTP/1.1 message framing: a request-head
 * parser, a response-head parser, a streaming scanner for chunked bodies,
 * and a response writer. The head parsers are pure functions over a
 * contiguous buffer, so unit tests and fuzzers need no sockets. They
 * reject what request smuggling, response splitting and slowloris rely
 * on: bare LF or CR, NUL, obs-fold, whitespace before the colon,
 * Content-Length together with Transfer-Encoding, conflicting
 * Content-Length, heads over the size limit (and, in requests, unknown
 * transfer codings).
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

/*
 * A response head. A Transfer-Encoding whose last coding is not chunked
 * means the body ends with the connection (RFC 9112 6.3): chunked is false
 * and content_length -1 then, as when neither header is there.
 */
struct pm_http_response {
    int status;         /* 100..999 */
    int minor;          /* HTTP/1.<minor> */
    const char *reason; /* points into the parsed buffer; may be empty */
    size_t reason_len;
    struct pm_http_header headers[PM_HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding ends in chunked */
    bool keep_alive;        /* per version and Connection header only: a
                               body that ends with the connection (see
                               pm_http_response_has_body) rules it out too */
    size_t head_len;        /* bytes of the head including the blank line */
    const char *error;      /* PM_EPROTO: what is wrong, a few words */
};

/*
 * Parse a response head from buf[0..len). Returns PM_OK with *res filled
 * (pointers into buf), PM_EAGAIN when the head is incomplete and still
 * within max_head, PM_ELIMIT when it is longer than max_head, or
 * PM_EPROTO with res->error set when it is malformed: a bad status line
 * (not "HTTP/1.<digit> <3 digits>[ <reason>]"), a bare CR or LF, a NUL,
 * obs-fold, a bad header line, more than PM_HTTP_MAX_HEADERS fields, a bad
 * or conflicting Content-Length, Content-Length with Transfer-Encoding, or
 * Transfer-Encoding in HTTP/1.0.
 */
int pm_http_parse_response(const char *buf, size_t len, size_t max_head,
                           struct pm_http_response *res);

/*
 * Whether the response to a request with this method has a body: not
 * for HEAD, 1xx, 204, 304 or a 2xx to CONNECT. One that has, neither
 * chunked nor with a Content-Length, ends with the connection.
 */
bool pm_http_response_has_body(const struct pm_http_response *res,
                               const char *method, size_t method_len);

/* Bytes of a chunk-size or trailer line (CRLF included), and of the
 * whole trailer section (its blank line included). */
#define PM_HTTP_CHUNK_LINE_MAX 4096
#define PM_HTTP_TRAILER_MAX 16384

/*
 * A chunked body followed as its bytes pass by (RFC 9112 7.1). The fields
 * are pm_http_chunked_feed's own.
 */
struct pm_http_chunked {
    int state;          /* pm_http.c's enum chunk_state */
    uint64_t remaining; /* chunk data bytes still to come; the size being
                           read on a chunk-size line */
    size_t line;        /* bytes of the current chunk-size or trailer line */
    size_t trailer;     /* bytes of the trailer section */
};

void pm_http_chunked_init(struct pm_http_chunked *ch);
/*
 * Feed p[0..len). *used is set to how many of those bytes belong to the
 * chunked body (the rest, after the body's final CRLF, is the next
 * message), *done to whether the last chunk and the trailer section have
 * ended (then nothing more is used). With data the chunk payload is
 * appended to it (decoding); with NULL the bytes are only scanned (a proxy
 * passes them on as they are). Chunk extensions and trailer fields are
 * checked for syntax and skipped. Returns PM_OK, or PM_EPROTO (and from
 * then on) for bad syntax: a size that is not hex or is 2^62 or more, no
 * CRLF after chunk data, a bare CR or LF, a line over
 * PM_HTTP_CHUNK_LINE_MAX or trailers over PM_HTTP_TRAILER_MAX.
 */
int pm_http_chunked_feed(struct pm_http_chunked *ch, const char *p, size_t len,
                         struct evbuffer *data, size_t *used, bool *done);

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
