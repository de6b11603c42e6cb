/*
 * signaling_relay: forwarding an addressed message with "from" set to the
 * sender's registered id. The fast path splices the id into the original
 * bytes (no re-serialisation: numbers, key order and spacing stay exactly
 * as the sender wrote them). Objects where the raw text could disagree
 * with what a JSON parser reads (escaped keys, "from" twice, which would
 * let a sender smuggle a second "from" past the server) take the slow
 * path: every "from" is removed from the parsed tree and one is added.
 * Routing (every dialect's addressed messages): to the target's socket,
 * through the cluster to the instance holding it, or into the offline
 * mailbox; senders are told what cannot be delivered. Loop thread.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>

#include "pm_conn.h"
#include "pm_metrics.h"
#include "pm_util.h"
#include "pm_ws.h"
#include "signaling.h"

static size_t
skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len &&
           (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"': index after the closing quote; *esc set if escapes seen. */
static size_t
skip_string(const char *s, size_t i, size_t len, bool *esc)
{
    size_t start = i + 1, j = start;

    for (;;) {
        const char *q = memchr(s + j, '"', len - j);
        size_t k, bs = 0;

        if (q == NULL)
            return len;
        k = (size_t)(q - s);
        while (k - bs > start && s[k - bs - 1] == '\\')
            bs++;
        if (bs % 2 == 0) { /* not an escaped quote: the end */
            if (memchr(s + start, '\\', k - start) != NULL)
                *esc = true;
            return k + 1;
        }
        j = k + 1;
    }
}

static size_t
skip_value(const char *s, size_t i, size_t len)
{
    bool esc = false;
    int depth = 0;

    if (i < len && s[i] == '"')
        return skip_string(s, i, len, &esc);
    if (i < len && (s[i] == '{' || s[i] == '[')) {
        for (; i < len; i++) {
            if (s[i] == '"') {
                i = skip_string(s, i, len, &esc) - 1;
            } else if (s[i] == '{' || s[i] == '[') {
                depth++;
            } else if (s[i] == '}' || s[i] == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return len;
    }
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' &&
           s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

bool
sig_json_scan(const char *s, size_t len, const char *const *keys,
              struct sig_span *spans, size_t *close)
{
    size_t i = skip_ws(s, 0, len), k;

    for (k = 0; keys[k] != NULL; k++)
        spans[k].start = spans[k].end = 0;
    if (i >= len || s[i] != '{')
        return false;
    i = skip_ws(s, i + 1, len);
    while (i < len && s[i] != '}') {
        bool esc = false;
        size_t ks = i + 1, ke;

        if (s[i] != '"')
            return false;
        i = skip_string(s, i, len, &esc);
        ke = i - 1;
        if (esc)
            return false;
        i = skip_ws(s, i, len);
        if (i >= len || s[i] != ':')
            return false;
        i = skip_ws(s, i + 1, len);
        for (k = 0; keys[k] != NULL; k++)
            if (ke - ks == strlen(keys[k]) &&
                memcmp(s + ks, keys[k], ke - ks) == 0)
                break;
        if (keys[k] != NULL) {
            if (spans[k].end != 0)
                return false; /* the key twice */
            spans[k].start = i;
            spans[k].end = skip_value(s, i, len);
            i = spans[k].end;
        } else {
            i = skip_value(s, i, len);
        }
        i = skip_ws(s, i, len);
        if (i < len && s[i] == ',')
            i = skip_ws(s, i + 1, len);
    }
    if (i >= len)
        return false;
    *close = i;
    return true;
}

int
sig_client_send(struct sig_client *c, const struct iovec *iov, int n)
{
    if (c->conn != NULL)
        return pm_conn_ws_sendv(c->conn, PM_WS_TEXT, iov, n);
    c->port->send(c->port->arg, c, iov, n);
    return PM_OK;
}

void
sig_client_send_json(struct sig_client *c, const cJSON *o)
{
    struct iovec iov;
    char *text;

    if (c->conn != NULL) {
        pm_conn_ws_send_json(c->conn, o);
        return;
    }
    text = cJSON_PrintUnformatted(o);
    iov.iov_base = text;
    iov.iov_len = strlen(text);
    c->port->send(c->port->arg, c, &iov, 1);
    free(text);
}

void
sig_client_close(struct sig_client *c, const char *reason)
{
    if (c->conn != NULL)
        pm_conn_ws_close(c->conn, PM_WS_NORMAL, reason);
    else
        c->port->close(c->port->arg, c, reason);
}

void
sig_send_local(struct sig *s, struct sig_client *c, const struct iovec *iov,
               int n)
{
    if (sig_client_send(c, iov, n) != PM_OK)
        return;
    switch (c->dialect) {
    case SIG_PEERJS:
        (*s->stats.relayed_peerjs)++;
        break;
    default:
        (*s->stats.relayed_mesh)++;
        break;
    }
}

/* One contiguous copy of the pieces (NUL-ended). */
static char *
flatten(const struct iovec *iov, int n, size_t *len)
{
    size_t off = 0;
    char *flat;
    int i;

    for (*len = 0, i = 0; i < n; i++)
        *len += iov[i].iov_len;
    flat = pm_xmalloc(*len + 1);
    for (i = 0; i < n; i++) {
        memcpy(flat + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    flat[off] = '\0';
    return flat;
}

void
sig_undeliverable(struct sig *s, struct sig_realm *r, const char *from,
                  const char *to, const char *type)
{
    struct sig_client *sender = sig_realm_find(r, from);
    char text[SIG_MAX_ID + 128];
    struct iovec iov;
    cJSON *o = cJSON_CreateObject();
    char *out;

    (*s->stats.undeliverable)++;
    if (sender == NULL) {
        cJSON_Delete(o);
        return;
    }
    if (r->kind == SIG_REALM_PEERJS) {
        cJSON_AddStringToObject(o, "type", "EXPIRE");
        cJSON_AddStringToObject(o, "src", to);
        cJSON_AddStringToObject(o, "dst", from);
    } else {
        sig_not_found_text(text, sizeof text, to, type);
        cJSON_AddStringToObject(o, "type", "error");
        cJSON_AddStringToObject(o, "message", text);
    }
    out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    iov.iov_base = out;
    iov.iov_len = strlen(out);
    if (sig_client_local(sender))
        sig_client_send(sender, &iov, 1);
    else /* the sender is on another instance */
        sig_cluster_relay(s, sender, to,
                          r->kind == SIG_REALM_PEERJS ? "EXPIRE" : "error",
                          &iov, 1);
    free(out);
}

int
sig_route(struct sig *s, struct sig_realm *r, const char *from, const char *to,
          const char *type, const struct iovec *iov, int n)
{
    struct sig_client *target = sig_realm_find(r, to);
    char *flat;
    size_t len;
    int rv;

    if (target != NULL && sig_client_local(target)) {
        sig_send_local(s, target, iov, n);
        return PM_OK;
    }
    if (target != NULL &&
        sig_cluster_relay(s, target, from, type, iov, n) == PM_OK)
        return PM_OK;
    /* Absent, or its instance unreachable now: hold it here. */
    if (r->kind == SIG_REALM_PEERJS &&
        (strcmp(type, "LEAVE") == 0 || strcmp(type, "EXPIRE") == 0))
        return PM_ENOTFOUND; /* PeerJS never queues these */
    flat = flatten(iov, n, &len);
    rv = strlen(to) > SIG_MAX_ID
             ? PM_ELIMIT
             : sig_offline_hold(s, r, to, from, type, flat, len,
                                r->kind == SIG_REALM_PEERJS
                                    ? s->conf->peerjs_expire
                                    : s->conf->mailbox_ttl);
    free(flat);
    if (rv != PM_OK)
        sig_undeliverable(s, r, from, to, type);
    return rv;
}

void
sig_relay(struct sig *s, struct sig_client *c, cJSON *msg, const char *data,
          size_t len, const char *type, const char *to)
{
    static const char *const from_key[] = {"from", NULL};
    struct sig_span from;
    struct iovec iov[3];
    size_t close;
    char *out;

    if (sig_json_scan(data, len, from_key, &from, &close)) {
        if (from.end > 0) { /* replace the value of "from" */
            iov[0].iov_base = (void *)data;
            iov[0].iov_len = from.start;
            iov[1].iov_base = c->id_json;
            iov[1].iov_len = strlen(c->id_json);
            iov[2].iov_base = (void *)(data + from.end);
            iov[2].iov_len = len - from.end;
        } else { /* add it before the closing brace */
            iov[0].iov_base = (void *)data;
            iov[0].iov_len = close;
            iov[1].iov_base = c->from_member;
            iov[1].iov_len = strlen(c->from_member);
            iov[2].iov_base = (void *)(data + close);
            iov[2].iov_len = len - close;
        }
        sig_route(s, c->realm, c->id, to, type, iov, 3);
        return;
    }
    /* Slow path: drop every "from" the parser saw, then name the sender. */
    while (cJSON_GetObjectItemCaseSensitive(msg, "from") != NULL)
        cJSON_DeleteItemFromObjectCaseSensitive(msg, "from");
    cJSON_AddStringToObject(msg, "from", c->id);
    out = cJSON_PrintUnformatted(msg);
    iov[0].iov_base = out;
    iov[0].iov_len = strlen(out);
    sig_route(s, c->realm, c->id, to, type, iov, 1);
    free(out);
}
