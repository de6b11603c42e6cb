/*
 * pm_http: strict HTTP/1.1 heads (RFC 9110/9112), chunked bodies and
 * responses. The head parsers validate every byte of the head as it
 * arrives, so a bad line ending or a NUL is refused at once instead of
 * waiting for the blank line; the caller feeds them the whole buffered
 * head each time. Requests and responses share the header-section parser
 * and the Content-Length and Transfer-Encoding rules. Stance on ambiguity
 * (request smuggling, response splitting): reject; a request gets 400 and
 * the connection is closed.
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

/* What a field value or reason phrase may hold: HTAB, SP, VCHAR,
 * obs-text. */
static bool
is_text(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Why a head was refused: the status a server answers a request with,
 * and a few words for a response. */
struct fault {
    int status;
    const char *why;
};

static int
fail(struct fault *f, int status, const char *why)
{
    f->status = status;
    f->why = why;
    return PM_EPROTO;
}

/*
 * Check the bytes seen so far: every LF preceded by CR, every CR followed
 * by LF, no NUL. Returns the head length (through the blank line) when
 * complete, 0 when incomplete, -1 on a bad byte. *first_line is set to the
 * length of the start line once its CRLF has arrived, else 0.
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
                   struct fault *f)
{
    const char *end = p + len, *sp;

    /* method */
    for (sp = p; sp < end && is_tchar((unsigned char)*sp); sp++)
        ;
    if (sp == p || sp >= end || *sp != ' ')
        return fail(f, 400, "bad method");
    req->method = p;
    req->method_len = (size_t)(sp - p);
    p = sp + 1;
    /* request-target: visible ASCII only */
    for (sp = p;
         sp < end && (unsigned char)*sp > 0x20 && (unsigned char)*sp < 0x7f;
         sp++)
        ;
    if (sp == p || sp >= end || *sp != ' ')
        return fail(f, 400, "bad request-target");
    req->target = p;
    req->target_len = (size_t)(sp - p);
    p = sp + 1;
    /* HTTP-version */
    if (end - p != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' ||
        p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9')
        return fail(f, 400, "bad HTTP version");
    if (p[5] != '1')
        return fail(f, 505, "not HTTP/1");
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

/*
 * "HTTP/1.<digit> <3 digits> <reason>". A status line that ends right
 * after the code (no space before an empty reason) is taken too: the
 * reason means nothing and many servers send it so.
 */
static int
parse_status_line(const char *p, size_t len, struct pm_http_response *res,
                  struct fault *f)
{
    size_t i;

    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' ||
        p[8] != ' ' || p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' ||
        p[11] < '0' || p[11] > '9' || (len > 12 && p[12] != ' '))
        return fail(f, 0, "bad status line");
    for (i = 13; i < len; i++)
        if (!is_text((unsigned char)p[i]))
            return fail(f, 0, "bad status line");
    res->minor = p[7] - '0';
    res->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    res->reason = p + (len > 12 ? 13 : 12);
    res->reason_len = len > 12 ? len - 13 : 0;
    return PM_OK;
}

static int
parse_header_line(const char *p, size_t len, struct pm_http_header *headers,
                  size_t *nheaders, struct fault *f)
{
    const char *end = p + len, *colon, *v, *ve;
    struct pm_http_header *h;

    if (is_ows(*p))
        return fail(f, 400, "obs-fold");
    for (colon = p; colon < end && is_tchar((unsigned char)*colon); colon++)
        ;
    if (colon == p || colon >= end || *colon != ':')
        return fail(f, 400, "bad header line");
    for (v = colon + 1; v < end && is_ows(*v); v++)
        ;
    for (ve = end; ve > v && is_ows(ve[-1]); ve--)
        ;
    for (const char *q = v; q < ve; q++)
        if (!is_text((unsigned char)*q))
            return fail(f, 400, "bad header value");
    if (*nheaders == PM_HTTP_MAX_HEADERS)
        return fail(f, 431, "too many header fields");
    h = &headers[(*nheaders)++];
    h->name = p;
    h->name_len = (size_t)(colon - p);
    h->value = v;
    h->value_len = (size_t)(ve - v);
    return PM_OK;
}

/* The field lines from p up to end (each ending in CRLF, as scan_head
 * made sure) into headers[*nheaders]. */
static int
parse_fields(const char *p, const char *end, struct pm_http_header *headers,
             size_t *nheaders, struct fault *f)
{
    int rv;

    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));

        PM_ASSERT(eol != NULL);
        rv = parse_header_line(p, (size_t)(eol - p), headers, nheaders, f);
        if (rv != PM_OK)
            return rv;
        p = eol + 2;
    }
    return PM_OK;
}

/* The next element of the comma-separated list *p..end, OWS trimmed and
 * maybe empty, into *e (*elen bytes); false past the last one. */
static bool
list_next(const char **p, const char *end, const char **e, size_t *elen)
{
    const char *s = *p, *comma, *te;

    if (s >= end)
        return false;
    comma = memchr(s, ',', (size_t)(end - s));
    te = comma != NULL ? comma : end;
    *p = comma != NULL ? comma + 1 : end;
    while (s < te && is_ows(*s))
        s++;
    while (te > s && is_ows(te[-1]))
        te--;
    *e = s;
    *elen = (size_t)(te - s);
    return true;
}

bool
pm_http_header_has_token(const struct pm_http_header *h, const char *token)
{
    const char *p = h->value, *e;
    size_t elen;

    while (list_next(&p, h->value + h->value_len, &e, &elen))
        if (pm_strcaseeq(e, elen, token))
            return true;
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

/* What a header section says about framing and the connection. */
struct framing {
    int64_t content_length; /* -1 when absent */
    bool te;                /* a Transfer-Encoding field */
    bool chunked;           /* its last coding is chunked */
    size_t hosts;
    bool conn_close, conn_keep, conn_upgrade, upgrade_ws;
};

/* Whether the last coding a Transfer-Encoding field lists is chunked;
 * an empty list leaves *chunked as the fields before it had it. */
static void
last_coding(const struct pm_http_header *h, bool *chunked)
{
    const char *p = h->value, *e;
    size_t elen;

    while (list_next(&p, h->value + h->value_len, &e, &elen))
        if (elen > 0)
            *chunked = pm_strcaseeq(e, elen, "chunked");
}

/*
 * Read the framing and connection fields in order. Content-Length must be
 * digits and agree when repeated, and cannot come with Transfer-Encoding.
 * request: a request's Transfer-Encoding, a single field of exactly
 * "chunked" (501 for another coding); a response's lists any codings.
 */
static int
read_framing(const struct pm_http_header *headers, size_t nheaders,
             bool request, struct framing *fr, struct fault *f)
{
    size_t i;

    memset(fr, 0, sizeof *fr);
    fr->content_length = -1;
    for (i = 0; i < nheaders; i++) {
        const struct pm_http_header *h = &headers[i];
        int64_t cl;

        if (pm_strcaseeq(h->name, h->name_len, "content-length")) {
            if (parse_content_length(h, &cl) != PM_OK)
                return fail(f, 400, "bad Content-Length");
            if (fr->content_length >= 0 && fr->content_length != cl)
                return fail(f, 400, "conflicting Content-Length");
            fr->content_length = cl;
        } else if (pm_strcaseeq(h->name, h->name_len, "transfer-encoding")) {
            if (request && fr->te)
                return fail(f, 400, "Transfer-Encoding twice");
            if (request && !pm_strcaseeq(h->value, h->value_len, "chunked"))
                return fail(f, 501, "unknown transfer coding");
            if (request)
                fr->chunked = true;
            else
                last_coding(h, &fr->chunked);
            fr->te = true;
        } else if (pm_strcaseeq(h->name, h->name_len, "host")) {
            fr->hosts++;
        } else if (pm_strcaseeq(h->name, h->name_len, "connection")) {
            fr->conn_close |= pm_http_header_has_token(h, "close");
            fr->conn_keep |= pm_http_header_has_token(h, "keep-alive");
            fr->conn_upgrade |= pm_http_header_has_token(h, "upgrade");
        } else if (pm_strcaseeq(h->name, h->name_len, "upgrade")) {
            fr->upgrade_ws |= pm_http_header_has_token(h, "websocket");
        }
    }
    if (fr->te && fr->content_length >= 0)
        return fail(f, 400, "Content-Length with Transfer-Encoding");
    return PM_OK;
}

/* HTTP/1.1 keeps the connection unless told to close it; 1.0 only when
 * asked to keep it. */
static bool
keeps_alive(const struct framing *fr, int minor)
{
    return minor >= 1 ? !fr->conn_close : fr->conn_keep && !fr->conn_close;
}

/* A request's framing and connection semantics from its headers. */
static int
interpret(struct pm_http_request *req, struct fault *f)
{
    struct framing fr;
    int rv = read_framing(req->headers, req->nheaders, true, &fr, f);

    if (rv != PM_OK)
        return rv;
    if (req->minor >= 1 && fr.hosts != 1)
        return fail(f, 400, "not one Host");
    if (req->minor == 0 && fr.hosts > 1)
        return fail(f, 400, "Host twice");
    req->content_length = fr.content_length;
    req->chunked = fr.chunked;
    req->keep_alive = keeps_alive(&fr, req->minor);
    req->upgrade_websocket = fr.conn_upgrade && fr.upgrade_ws;
    return PM_OK;
}

int
pm_http_parse(const char *buf, size_t len, size_t max_head,
              struct pm_http_request *req, int *status)
{
    size_t first_line, scan_len = len < max_head ? len : max_head;
    long head = scan_head(buf, scan_len, &first_line);
    struct fault f = {0, NULL};
    int rv;

    *status = 0;
    if (head < 0) {
        *status = 400;
        return PM_EPROTO;
    }
    if (head == 0) {
        if (len < max_head)
            return PM_EAGAIN;
        *status = first_line == 0 ? 414 : 431;
        return PM_EPROTO;
    }
    memset(req, 0, offsetof(struct pm_http_request, headers));
    req->nheaders = 0;
    req->head_len = (size_t)head;
    rv = parse_request_line(buf, first_line - 2, req, &f);
    if (rv == PM_OK)
        rv = parse_fields(buf + first_line, buf + head - 2, req->headers,
                          &req->nheaders, &f);
    if (rv == PM_OK)
        rv = interpret(req, &f);
    *status = f.status;
    return rv;
}

int
pm_http_parse_response(const char *buf, size_t len, size_t max_head,
                       struct pm_http_response *res)
{
    size_t first_line, scan_len = len < max_head ? len : max_head;
    long head = scan_head(buf, scan_len, &first_line);
    struct fault f = {0, NULL};
    struct framing fr;
    int rv;

    res->error = NULL;
    if (head < 0) {
        res->error = "bad line ending or NUL";
        return PM_EPROTO;
    }
    if (head == 0)
        return len < max_head ? PM_EAGAIN : PM_ELIMIT;
    memset(res, 0, offsetof(struct pm_http_response, headers));
    res->nheaders = 0;
    res->head_len = (size_t)head;
    rv = parse_status_line(buf, first_line - 2, res, &f);
    if (rv == PM_OK)
        rv = parse_fields(buf + first_line, buf + head - 2, res->headers,
                          &res->nheaders, &f);
    if (rv == PM_OK)
        rv = read_framing(res->headers, res->nheaders, false, &fr, &f);
    if (rv == PM_OK && fr.te && res->minor == 0) /* RFC 9112 6.1 */
        rv = fail(&f, 0, "Transfer-Encoding in HTTP/1.0");
    if (rv != PM_OK) {
        res->error = f.why;
        return rv;
    }
    res->content_length = fr.content_length;
    res->chunked = fr.chunked;
    res->keep_alive = keeps_alive(&fr, res->minor);
    return PM_OK;
}

bool
pm_http_response_has_body(const struct pm_http_response *res,
                          const char *method, size_t method_len)
{
    if (res->status < 200 || res->status == 204 || res->status == 304)
        return false;
    /* methods are case-sensitive */
    if (method_len == 4 && memcmp(method, "HEAD", 4) == 0)
        return false;
    return res->status >= 300 || method_len != 7 ||
           memcmp(method, "CONNECT", 7) != 0;
}

/* ---- chunked bodies ------------------------------------------------- */

enum chunk_state {
    CH_START,   /* the first hex digit of a chunk size */
    CH_SIZE,    /* more of them */
    CH_SIZE_WS, /* whitespace after them */
    CH_EXT,     /* chunk extensions, up to the CR */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER, /* a trailer field line, or the CR of the blank line */
    CH_FIELD_NAME,
    CH_FIELD_VALUE,
    CH_FIELD_LF,
    CH_LAST_LF,
    CH_DONE,
    CH_BAD
};

void
pm_http_chunked_init(struct pm_http_chunked *ch)
{
    memset(ch, 0, sizeof *ch);
    ch->state = CH_START;
}

static int
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The state after byte c of a chunk-size line, the CRLF after chunk data
 * or the trailer section. */
static enum chunk_state
chunk_next(struct pm_http_chunked *ch, unsigned char c)
{
    int d = hex_digit(c);

    switch ((enum chunk_state)ch->state) {
    case CH_START:
        if (d < 0)
            return CH_BAD;
        ch->remaining = (uint64_t)d;
        return CH_SIZE;
    case CH_SIZE:
        if (d >= 0) {
            if (ch->remaining >> 58 != 0) /* 2^62 or more */
                return CH_BAD;
            ch->remaining = ch->remaining << 4 | (uint64_t)d;
            return CH_SIZE;
        }
        /* fall through */
    case CH_SIZE_WS:
        if (is_ows((char)c))
            return CH_SIZE_WS;
        if (c == ';')
            return CH_EXT;
        return c == '\r' ? CH_SIZE_LF : CH_BAD;
    case CH_EXT:
        if (c == '\r')
            return CH_SIZE_LF;
        return is_text(c) ? CH_EXT : CH_BAD;
    case CH_SIZE_LF:
        if (c != '\n')
            return CH_BAD;
        return ch->remaining > 0 ? CH_DATA : CH_TRAILER;
    case CH_DATA_CR:
        return c == '\r' ? CH_DATA_LF : CH_BAD;
    case CH_DATA_LF:
        return c == '\n' ? CH_START : CH_BAD;
    case CH_TRAILER:
        if (c == '\r')
            return CH_LAST_LF;
        return is_tchar(c) ? CH_FIELD_NAME : CH_BAD; /* no obs-fold */
    case CH_FIELD_NAME:
        if (c == ':')
            return CH_FIELD_VALUE;
        return is_tchar(c) ? CH_FIELD_NAME : CH_BAD;
    case CH_FIELD_VALUE:
        if (c == '\r')
            return CH_FIELD_LF;
        return is_text(c) ? CH_FIELD_VALUE : CH_BAD;
    case CH_FIELD_LF:
        return c == '\n' ? CH_TRAILER : CH_BAD;
    case CH_LAST_LF:
        return c == '\n' ? CH_DONE : CH_BAD;
    case CH_DATA:
    case CH_DONE:
    case CH_BAD:
        break;
    }
    return CH_BAD;
}

int
pm_http_chunked_feed(struct pm_http_chunked *ch, const char *p, size_t len,
                     struct evbuffer *data, size_t *used, bool *done)
{
    size_t i = 0;

    while (i < len && ch->state != CH_DONE && ch->state != CH_BAD) {
        unsigned char c = (unsigned char)p[i];

        if (ch->state == CH_DATA) {
            size_t n = len - i;

            if (n > ch->remaining)
                n = (size_t)ch->remaining;
            if (data != NULL) {
                int rc = evbuffer_add(data, p + i, n);

                PM_ASSERT(rc == 0); /* fails only out of memory */
            }
            i += n;
            ch->remaining -= n;
            if (ch->remaining == 0)
                ch->state = CH_DATA_CR;
            continue;
        }
        i++;
        if (++ch->line > PM_HTTP_CHUNK_LINE_MAX ||
            (ch->state >= CH_TRAILER && ++ch->trailer > PM_HTTP_TRAILER_MAX))
            ch->state = CH_BAD;
        else
            ch->state = chunk_next(ch, c);
        if (c == '\n')
            ch->line = 0;
    }
    *used = i;
    *done = ch->state == CH_DONE;
    return ch->state == CH_BAD ? PM_EPROTO : PM_OK;
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
