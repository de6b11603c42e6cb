/*
 * pm_http: strict HTTP/1.1 request heads (RFC 9110/9112) and responses.
 * The parser validates every byte of the head as it arrives, so a bad
 * line ending or a NUL is refused at once instead of waiting for the
 * blank line; the caller feeds it the whole buffered head each time.
 * Stance on ambiguity (request smuggling): reject, answer 400, close.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "pm_http.h"
#include "pm_util.h"

/* RFC 9110 tchar */
static bool
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
        (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
fail(int *status, int code)
{
    *status = code;
    return PM_EPROTO;
}

/*
 * Check the bytes seen so far: every LF preceded by CR, every CR followed
 * by LF, no NUL. Returns the head length (through the blank line) when
 * complete, 0 when incomplete, -1 on a bad byte. *first_line is set to the
 * length of the request line once its CRLF has arrived, else 0.
 */
static long
scan_head(const char *buf, size_t len, size_t *first_line)
{
    size_t i;

    *first_line = 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];

        if (c == '\0')
            return -1;
        if (c == '\r') {
            if (i + 1 < len && buf[i + 1] != '\n')
                return -1;
            continue;
        }
        if (c != '\n')
            continue;
        if (i == 0 || buf[i - 1] != '\r')
            return -1;
        if (*first_line == 0)
            *first_line = i + 1;
        if (i >= 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return (long)(i + 1);
    }
    return 0;
}

static int
parse_request_line(const char *p, size_t len, struct pm_http_request *req,
                   int *status)
{
    const char *end = p + len, *sp;

    /* method */
    for (sp = p; sp < end && is_tchar((unsigned char)*sp); sp++)
        ;
    if (sp == p || sp >= end || *sp != ' ')
        return fail(status, 400);
    req->method = p;
    req->method_len = (size_t)(sp - p);
    p = sp + 1;
    /* request-target: visible ASCII only */
    for (sp = p;
         sp < end && (unsigned char)*sp > 0x20 && (unsigned char)*sp < 0x7f;
         sp++)
        ;
    if (sp == p || sp >= end || *sp != ' ')
        return fail(status, 400);
    req->target = p;
    req->target_len = (size_t)(sp - p);
    p = sp + 1;
    /* HTTP-version */
    if (end - p != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' ||
        p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9')
        return fail(status, 400);
    if (p[5] != '1')
        return fail(status, 505);
    req->minor = p[7] - '0';
    req->path = req->target;
    req->path_len = req->target_len;
    req->query = NULL;
    req->query_len = 0;
    sp = memchr(req->target, '?', req->target_len);
    if (sp != NULL) {
        req->path_len = (size_t)(sp - req->target);
        req->query = sp + 1;
        req->query_len = req->target_len - req->path_len - 1;
    }
    return PM_OK;
}

static int
parse_header_line(const char *p, size_t len, struct pm_http_request *req,
                  int *status)
{
    const char *end = p + len, *colon, *v, *ve;
    struct pm_http_header *h;

    if (*p == ' ' || *p == '\t') /* obs-fold */
        return fail(status, 400);
    for (colon = p; colon < end && is_tchar((unsigned char)*colon); colon++)
        ;
    if (colon == p || colon >= end || *colon != ':')
        return fail(status, 400);
    for (v = colon + 1; v < end && (*v == ' ' || *v == '\t'); v++)
        ;
    for (ve = end; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
        ;
    for (const char *q = v; q < ve; q++) {
        unsigned char c = (unsigned char)*q;

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(status, 400);
    }
    if (req->nheaders == PM_HTTP_MAX_HEADERS)
        return fail(status, 431);
    h = &req->headers[req->nheaders++];
    h->name = p;
    h->name_len = (size_t)(colon - p);
    h->value = v;
    h->value_len = (size_t)(ve - v);
    return PM_OK;
}

static bool
value_token_eq(const char *s, size_t len, const char *tok)
{
    return pm_strcaseeq(s, len, tok);
}

bool
pm_http_header_has_token(const struct pm_http_header *h, const char *token)
{
    const char *p = h->value, *end = h->value + h->value_len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *te = comma ? comma : end, *ts = p;

        while (ts < te && (*ts == ' ' || *ts == '\t'))
            ts++;
        while (te > ts && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if (value_token_eq(ts, (size_t)(te - ts), token))
            return true;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return false;
}

const struct pm_http_header *
pm_http_header_get(const struct pm_http_request *req, const char *name)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++)
        if (pm_strcaseeq(req->headers[i].name, req->headers[i].name_len, name))
            return &req->headers[i];
    return NULL;
}

static int
parse_content_length(const struct pm_http_header *h, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (h->value_len == 0 || h->value_len > 18)
        return PM_EINVAL;
    for (i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9')
            return PM_EINVAL;
        v = v * 10 + (h->value[i] - '0');
    }
    *out = v;
    return PM_OK;
}

/* Framing and connection semantics from the parsed headers. */
static int
interpret(struct pm_http_request *req, int *status)
{
    bool have_te = false, conn_close = false, conn_keep = false;
    bool conn_upgrade = false, up_ws = false;
    size_t i, hosts = 0;

    req->content_length = -1;
    req->chunked = false;
    for (i = 0; i < req->nheaders; i++) {
        const struct pm_http_header *h = &req->headers[i];
        int64_t cl;

        if (pm_strcaseeq(h->name, h->name_len, "content-length")) {
            if (parse_content_length(h, &cl) != PM_OK)
                return fail(status, 400);
            if (req->content_length >= 0 && req->content_length != cl)
                return fail(status, 400);
            req->content_length = cl;
        } else if (pm_strcaseeq(h->name, h->name_len, "transfer-encoding")) {
            if (have_te || !pm_strcaseeq(h->value, h->value_len, "chunked"))
                return fail(status, have_te ? 400 : 501);
            have_te = true;
            req->chunked = true;
        } else if (pm_strcaseeq(h->name, h->name_len, "host")) {
            hosts++;
        } else if (pm_strcaseeq(h->name, h->name_len, "connection")) {
            conn_close |= pm_http_header_has_token(h, "close");
            conn_keep |= pm_http_header_has_token(h, "keep-alive");
            conn_upgrade |= pm_http_header_has_token(h, "upgrade");
        } else if (pm_strcaseeq(h->name, h->name_len, "upgrade")) {
            up_ws |= pm_http_header_has_token(h, "websocket");
        }
    }
    if (have_te && req->content_length >= 0)
        return fail(status, 400);
    if (req->minor >= 1 && hosts != 1)
        return fail(status, 400);
    if (req->minor == 0 && hosts > 1)
        return fail(status, 400);
    req->keep_alive = req->minor >= 1 ? !conn_close : conn_keep && !conn_close;
    req->upgrade_websocket = conn_upgrade && up_ws;
    return PM_OK;
}

int
pm_http_parse(const char *buf, size_t len, size_t max_head,
              struct pm_http_request *req, int *status)
{
    size_t first_line, scan_len = len < max_head ? len : max_head;
    long head = scan_head(buf, scan_len, &first_line);
    const char *p, *end;
    int rv;

    *status = 0;
    if (head < 0)
        return fail(status, 400);
    if (head == 0) {
        if (len < max_head)
            return PM_EAGAIN;
        return fail(status, first_line == 0 ? 414 : 431);
    }
    memset(req, 0, offsetof(struct pm_http_request, headers));
    req->nheaders = 0;
    req->head_len = (size_t)head;
    rv = parse_request_line(buf, first_line - 2, req, status);
    if (rv != PM_OK)
        return rv;
    p = buf + first_line;
    end = buf + head - 2; /* before the final CRLF */
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));

        PM_ASSERT(eol != NULL);
        if ((rv = parse_header_line(p, (size_t)(eol - p), req, status)) !=
            PM_OK)
            return rv;
        p = eol + 2;
    }
    return interpret(req, status);
}

/* Locate the raw value of query parameter name; false if absent. */
static bool
find_param(const struct pm_http_request *req, const char *name, const char **v,
           const char **vend)
{
    const char *p = req->query, *end = req->query + req->query_len;
    size_t nlen = strlen(name);

    while (p != NULL && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;

        if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0) {
            *v = eq ? eq + 1 : pe;
            *vend = pe;
            return true;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

int
pm_http_query_param(const struct pm_http_request *req, const char *name,
                    char *out, size_t outlen)
{
    const char *v, *pe;

    if (req->query == NULL || !find_param(req, name, &v, &pe))
        return PM_ENOTFOUND;
    return pm_percent_decode(v, (size_t)(pe - v), true, out, outlen);
}

const char *
pm_http_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* "Sun, 06 Nov 1994 08:49:37 GMT", cached for the current second. */
static const char *
http_date(void)
{
    static char buf[40];
    static time_t cached = (time_t)-1;
    time_t now = time(NULL);

    if (now != cached) {
        struct tm tm;

        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return buf;
}

void
pm_http_write_response(struct evbuffer *out, int status, const char *ctype,
                       const char *extra_headers, const void *body,
                       size_t body_len, bool keep_alive, bool head_only)
{
    evbuffer_add_printf(
        out, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: p2pmesh/%s\r\n", status,
        pm_http_reason(status), http_date(), pm_version);
    if (ctype == NULL && body_len > 0)
        ctype = "application/octet-stream";
    if (ctype != NULL)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    if (status != 101 && status != 204)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", body_len);
    if (status != 101)
        evbuffer_add_printf(out, "Connection: %s\r\n",
                            keep_alive ? "keep-alive" : "close");
    if (extra_headers != NULL)
        evbuffer_add(out, extra_headers, strlen(extra_headers));
    evbuffer_add(out, "\r\n", 2);
    if (!head_only && body_len > 0)
        evbuffer_add(out, body, body_len);
}
