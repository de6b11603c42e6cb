/*
 * signaling_auth: who may connect (signaling.auth) and GET /ice.
 *
 * With signaling.auth=jwt every WebSocket upgrade, in every dialect, and
 * every /ice request must carry an HS256 token (core pm_jwt, key
 * jwt.secret); its sub is the only peer id the connection may use. The
 * token is read from the first of: ?token= (p2pmesh and y-webrtc
 * clients), ?jwt= (the only query name on the PeerJS path, where token
 * is PeerJS's own), Authorization: Bearer, and for upgrades
 * Sec-WebSocket-Protocol, the one header a browser can set: the first
 * offered value shaped like a JWT is the token. A browser fails the
 * handshake unless the 101 echoes one offered value, so the first offered
 * value that is not the token is echoed (conventionally "jwt", from
 * ["jwt", token]); the token itself only when it is all that was offered.
 * Refusals are 401 and one info log line with the reason; tokens and
 * secrets are never logged.
 *
 * GET /ice answers {"iceServers":[...]}: signaling.stun_urls, and with
 * signaling.turn_secret TURN credentials in coturn's REST API format
 * (use-auth-secret): username "<expiry>:<user>", credential
 * base64(HMAC-SHA1(secret, username)), valid signaling.turn_ttl; "ttl"
 * (seconds) tells clients when to fetch again. Loop thread; no state.
 */
#include "config.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "pm_conn.h"
#include "pm_http.h"
#include "pm_jwt.h"
#include "pm_log.h"
#include "pm_server.h"
#include "pm_util.h"
#include "signaling.h"

/* The TURN user when nothing names one. */
#define SIG_ICE_DEFAULT_USER "p2pmesh"

/*
 * The next non-empty item of the comma list [*p, end), without the
 * spaces and tabs around it; advances *p. False when none is left.
 */
static bool
list_next(const char **p, const char *end, const char **item, size_t *len)
{
    while (*p < end) {
        const char *comma = memchr(*p, ',', (size_t)(end - *p));
        const char *b = *p, *e = comma ? comma : end;

        *p = comma ? comma + 1 : end;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > b) {
            *item = b;
            *len = (size_t)(e - b);
            return true;
        }
    }
    return false;
}

/* Three base64url parts joined by dots: a compact JWT, by its shape. */
static bool
jwt_shaped(const char *s, size_t n)
{
    size_t i, dots = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '.')
            dots++;
        else if (!((s[i] >= 'A' && s[i] <= 'Z') ||
                   (s[i] >= 'a' && s[i] <= 'z') ||
                   (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
            return false;
    }
    return dots == 2;
}

/* The token as found: where it is, and the subprotocol list it came in. */
struct sig_token {
    const char *p;
    size_t len;
    const char *offered; /* set: from the subprotocols [offered, end) */
    const char *offered_end;
};

/* Pick the token of src (see the top of the file): PM_OK or
 * PM_ENOTFOUND. */
static int
pick_token(const struct sig_auth_src *src, struct sig_token *t)
{
    const char *p, *end;

    t->offered = NULL;
    if (src->query != NULL) {
        t->p = src->query;
        t->len = strlen(src->query);
        return PM_OK;
    }
    if (src->authorization != NULL && src->authorization_len > 7 &&
        pm_strcaseeq(src->authorization, 7, "bearer ")) {
        for (p = src->authorization + 7; *p == ' '; p++)
            ;
        t->p = p;
        t->len = (size_t)(src->authorization + src->authorization_len - p);
        return PM_OK;
    }
    if (src->protocols == NULL)
        return PM_ENOTFOUND;
    p = src->protocols;
    end = src->protocols + src->protocols_len;
    while (list_next(&p, end, &t->p, &t->len))
        if (jwt_shaped(t->p, t->len)) {
            t->offered = src->protocols;
            t->offered_end = end;
            return PM_OK;
        }
    return PM_ENOTFOUND;
}

/* The offered subprotocol to echo: the first that is not the token, else
 * the token (see the top of the file). */
static void
echo_choice(const struct sig_token *t, const char **echo, size_t *echo_len)
{
    const char *p = t->offered, *item;
    size_t len;

    *echo = t->p;
    *echo_len = t->len;
    while (list_next(&p, t->offered_end, &item, &len))
        if (item != t->p) {
            *echo = item;
            *echo_len = len;
            return;
        }
}

int
sig_auth_verify(const char *secret, const struct sig_auth_src *src, char **sub,
                int64_t *exp, const char **echo, size_t *echo_len, char *err,
                size_t errlen)
{
    struct pm_jwt_claims claims = {NULL, 0};
    struct sig_token t;
    int rv;

    *echo = NULL;
    *echo_len = 0;
    if (pick_token(src, &t) != PM_OK)
        return pm_errf(err, errlen, PM_EINVAL, "no token");
    if (t.len > PM_JWT_MAX_LEN)
        return pm_errf(err, errlen, PM_EINVAL, "token is longer than %d bytes",
                       PM_JWT_MAX_LEN);
    rv = pm_jwt_verify(t.p, t.len, secret, strlen(secret),
                       (int64_t)(pm_wall_ms() / 1000), &claims, err, errlen);
    if (rv != PM_OK)
        return PM_EINVAL;
    if (strlen(claims.sub) > SIG_MAX_ID) {
        free(claims.sub);
        return pm_errf(err, errlen, PM_EINVAL,
                       "token sub is longer than %d bytes", SIG_MAX_ID);
    }
    if (t.offered != NULL)
        echo_choice(&t, echo, echo_len);
    *sub = claims.sub;
    *exp = claims.exp;
    return PM_OK;
}

/*
 * Verify the request's token; PM_OK with *sub its sub (malloc'd), or
 * PM_EINVAL after logging why. upgrade: a WebSocket upgrade (the token
 * may be a subprotocol, which is then echoed).
 */
static int
authenticate(struct sig *s, struct pm_conn *conn,
             const struct pm_http_request *req, bool upgrade, char **sub)
{
    static const char *const names[] = {"token", "jwt", NULL};
    const char *const *name = names;
    const struct pm_http_header *h;
    struct sig_auth_src src = {NULL, NULL, 0, NULL, 0};
    char buf[PM_JWT_MAX_LEN + 2], err[PM_ERRMSG_SIZE];
    const char *echo;
    size_t echo_len;
    int64_t exp;
    int rv = PM_OK;

    if (upgrade && sig_peerjs_is_ws(s, req))
        name++; /* PeerJS's token is its own */
    for (; *name != NULL && src.query == NULL; name++) {
        rv = pm_http_query_param(req, *name, buf, sizeof buf);
        if (rv == PM_OK)
            src.query = buf;
        else if (rv != PM_ENOTFOUND)
            break;
    }
    if ((h = pm_http_header_get(req, "authorization")) != NULL) {
        src.authorization = h->value;
        src.authorization_len = h->value_len;
    }
    if (upgrade && (h = pm_http_header_get(req, "sec-websocket-protocol"))) {
        src.protocols = h->value;
        src.protocols_len = h->value_len;
    }
    if (rv != PM_OK && rv != PM_ENOTFOUND)
        rv = pm_errf(err, sizeof err, rv, "token is longer than %d bytes",
                     PM_JWT_MAX_LEN);
    else
        rv = sig_auth_verify(pm_server_conf(s->srv)->jwt_secret, &src, sub,
                             &exp, &echo, &echo_len, err, sizeof err);
    if (rv == PM_OK) {
        char exps[24];

        if (echo != NULL)
            pm_conn_set_ws_protocol(conn, echo, echo_len);
        snprintf(exps, sizeof exps, "%" PRId64, exp);
        pm_log_kv(PM_LOG_DEBUG, "auth_ok", "token accepted", "peer", *sub,
                  "exp", exp != 0 ? exps : NULL, "ip", pm_conn_ip(conn), NULL);
    } else {
        pm_log_kv(PM_LOG_INFO, "auth_refused", "request refused (401)",
                  "reason", err, "request", upgrade ? "upgrade" : "ice", "ip",
                  pm_conn_ip(conn), NULL);
        rv = PM_EINVAL;
    }
    return rv;
}

int
sig_auth_check(struct sig *s, struct pm_conn *conn,
               const struct pm_http_request *req, char **sub, int *status)
{
    *sub = NULL;
    if (strcmp(s->conf->auth, "jwt") != 0)
        return PM_OK;
    if (authenticate(s, conn, req, true, sub) != PM_OK) {
        *status = 401;
        return PM_EINVAL;
    }
    return PM_OK;
}

/* ---- GET /ice ----------------------------------------------------------- */

/* A configured list as a string (pm_config makes an empty one NULL). */
static const char *
or_empty(const char *list)
{
    return list != NULL ? list : "";
}

/* Check every item of a URL list starts with one of two schemes. */
static int
check_urls(const char *key, const char *list, const char *scheme,
           const char *scheme_tls, char *err, size_t errlen)
{
    const char *p = or_empty(list), *item;
    size_t len;

    while (list_next(&p, p + strlen(p), &item, &len))
        if (strncasecmp(item, scheme, strlen(scheme)) != 0 &&
            strncasecmp(item, scheme_tls, strlen(scheme_tls)) != 0)
            return pm_errf(err, errlen, PM_EINVAL,
                           "%s: '%.*s' is not a %s or %s URL", key,
                           len > 64 ? 64 : (int)len, item, scheme, scheme_tls);
    return PM_OK;
}

static bool
has_urls(const char *list)
{
    const char *p = or_empty(list), *item;
    size_t len;

    return list_next(&p, p + strlen(p), &item, &len);
}

int
sig_ice_validate(const void *conf, char *err, size_t errlen)
{
    const struct sig_conf *sc = conf;

    if (check_urls("signaling.stun_urls", sc->stun_urls, "stun:", "stuns:", err,
                   errlen) != PM_OK ||
        check_urls("signaling.turn_urls", sc->turn_urls, "turn:", "turns:", err,
                   errlen) != PM_OK)
        return PM_EINVAL;
    if (sc->turn_secret != NULL && !has_urls(sc->turn_urls))
        return pm_errf(err, errlen, PM_EINVAL,
                       "signaling.turn_secret is set but signaling.turn_urls "
                       "is empty (the TURN servers it is for)");
    if (has_urls(sc->turn_urls) && sc->turn_secret == NULL)
        return pm_errf(err, errlen, PM_EINVAL,
                       "signaling.turn_urls is set but signaling.turn_secret "
                       "is not (coturn's static-auth-secret)");
    return PM_OK;
}

static cJSON *
url_array(const char *list)
{
    cJSON *a = cJSON_CreateArray();
    const char *p = or_empty(list), *item;
    size_t len;

    while (list_next(&p, p + strlen(p), &item, &len)) {
        char *url = pm_xstrndup(item, len);

        cJSON_AddItemToArray(a, cJSON_CreateString(url));
        free(url);
    }
    return a;
}

/* The /ice body for TURN user (malloc'd JSON). */
static char *
ice_json(const struct sig_conf *sc, const char *user)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *servers = cJSON_AddArrayToObject(o, "iceServers"), *e;
    char cred[PM_HMAC_SHA1_B64_SIZE], *name, *body;

    if (has_urls(sc->stun_urls)) {
        e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "urls", url_array(sc->stun_urls));
        cJSON_AddItemToArray(servers, e);
    }
    if (sc->turn_secret != NULL) { /* then turn_urls too (validated) */
        name = pm_xasprintf("%" PRIu64 ":%s",
                            pm_wall_ms() / 1000 + sc->turn_ttl / 1000, user);
        pm_hmac_sha1_base64(sc->turn_secret, strlen(sc->turn_secret), name,
                            strlen(name), cred);
        e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "urls", url_array(sc->turn_urls));
        cJSON_AddStringToObject(e, "username", name);
        cJSON_AddStringToObject(e, "credential", cred);
        cJSON_AddItemToArray(servers, e);
        cJSON_AddNumberToObject(o, "ttl", (double)(sc->turn_ttl / 1000));
        free(name);
    }
    body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return body;
}

/* Keep what is safe in a TURN username: letters, digits, "-_.@". */
static void
sanitise_user(char *u)
{
    char *o = u;

    for (; *u != '\0'; u++)
        if ((*u >= 'A' && *u <= 'Z') || (*u >= 'a' && *u <= 'z') ||
            (*u >= '0' && *u <= '9') || strchr("-_.@", *u) != NULL)
            *o++ = *u;
    *o = '\0';
}

/* A plain-text "<status> <reason>" answer. */
static void
ice_status(struct pm_conn *conn, int status, const char *extra)
{
    char *body = pm_xasprintf("%d %s\n", status, pm_http_reason(status));

    pm_conn_http_respond(conn, status, "text/plain; charset=utf-8", extra, body,
                         strlen(body));
    free(body);
}

int
sig_ice_http(struct sig *s, struct pm_conn *conn,
             const struct pm_http_request *req)
{
    char user[SIG_MAX_ID + 1], *sub = NULL, *body;
    const char *who = user;
    int rv;

    if (req->path_len != 4 || memcmp(req->path, "/ice", 4) != 0)
        return PM_ENOTFOUND;
    if (!pm_strcaseeq(req->method, req->method_len, "GET") &&
        !pm_strcaseeq(req->method, req->method_len, "HEAD")) {
        ice_status(conn, 405, "Allow: GET, HEAD\r\n");
        return PM_OK;
    }
    if (strcmp(s->conf->auth, "jwt") == 0) {
        if (authenticate(s, conn, req, false, &sub) != PM_OK) {
            ice_status(
                conn, 401,
                "WWW-Authenticate: Bearer\r\nCache-Control: no-store\r\n");
            return PM_OK;
        }
        who = sub;
    } else {
        rv = pm_http_query_param(req, "user", user, sizeof user);
        if (rv == PM_ELIMIT) {
            ice_status(conn, 400, NULL);
            return PM_OK;
        }
        if (rv == PM_OK)
            sanitise_user(user);
        if (rv != PM_OK || user[0] == '\0')
            who = SIG_ICE_DEFAULT_USER;
    }
    body = ice_json(s->conf, who);
    free(sub);
    pm_conn_http_respond(conn, 200, "application/json",
                         "Cache-Control: no-store\r\n", body, strlen(body));
    cJSON_free(body);
    return PM_OK;
}
