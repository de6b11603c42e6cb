/*
 * fuzz_signaling: drives the signaling role's JSON dialect handling
 * through sig_client_message (roles/signaling/signaling_role.c): the
 * first-message dialect choice and the p2pmesh dialect
 * (signaling_mesh.c: join, leave, ping, the relayed types, batched
 * signals, errors), realms and nearest-peer selection
 * (signaling_realm.c), and relaying with its JSON splicing
 * (signaling_relay.c: sig_json_scan, sig_relay). Three clients are
 * reached through a struct sig_port (as lambda_signaling.c does), two
 * in the global realm and one in room "r"; the offline mailbox is off
 * (it needs the loop's timers).
 *
 * Input: lines split at '\n'; a line starting with a digit is a message
 * of client (digit % 3), else of client 0. A client whose first message
 * would make it a y-webrtc connection is skipped (that dialect writes to
 * its WebSocket directly; see tests/fuzz/README.md).
 *
 * Asserts: every message a client is sent is one JSON object with a
 * string "type"; the port is told of exactly the joins and departures
 * of the clients that hold an id; when every client has departed no
 * realm is left.
 */
#include "config.h"

#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "pm_log.h"
#include "pm_util.h"
#include "signaling.h"

#define NCLIENTS 3

static struct sig_conf conf = {
    .bootstrap_count = 5,
    .announce_max = 64,
    .mailbox_max = 0,
    .mailbox_ttl = 30000,
    .heartbeat_interval = 30000,
    .max_peers_per_realm = 10000,
    .presence_ttl = 30000,
    .peerjs_path = (char *)"/",
    .peerjs_key = (char *)"peerjs",
    .peerjs_expire = 5000,
    .peerjs_alive_timeout = 60000,
    .peerjs_concurrent_limit = 5000,
    .max_topics_per_conn = 64,
    .session_ttl = 90000,
    .rendezvous_ttl = 30000,
    .push_buffer = 100,
    .mailbox_list_max = 256,
    .auth = (char *)"none",
    .stun_urls = (char *)"",
    .turn_urls = (char *)"",
    .turn_ttl = 86400000,
};

static int64_t peers_gauge;
static uint64_t counters[8];
static unsigned joined_now, sent;
static struct sig_client *clients[NCLIENTS];
static bool closed[NCLIENTS];

static int
index_of(const struct sig_client *c)
{
    int i;

    for (i = 0; i < NCLIENTS; i++)
        if (clients[i] == c)
            return i;
    FUZZ_CHECK(!"a message for a client that does not exist");
    return -1;
}

static void
port_send(void *arg, struct sig_client *c, const struct iovec *iov, int n)
{
    size_t len = 0, off = 0;
    char *buf;
    cJSON *o;
    int i;

    (void)arg;
    (void)index_of(c);
    for (i = 0; i < n; i++)
        len += iov[i].iov_len;
    buf = pm_xmalloc(len ? len : 1);
    for (i = 0; i < n; i++) {
        memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    o = cJSON_ParseWithLength(buf, len);
    if (!cJSON_IsObject(o) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "type"))) {
        fprintf(stderr, "sent: %.*s\n", (int)len, buf);
        FUZZ_CHECK(!"a client was sent something that is not a JSON object "
                    "with a string type");
    }
    cJSON_Delete(o);
    free(buf);
    sent++;
}

static void
port_close(void *arg, struct sig_client *c, const char *reason)
{
    (void)arg;
    (void)reason;
    closed[index_of(c)] = true;
}

static void
port_joined(void *arg, struct sig_client *c)
{
    (void)arg;
    (void)c;
    joined_now++;
}

static void
port_left(void *arg, struct sig_client *c)
{
    (void)arg;
    (void)c;
    FUZZ_CHECK(joined_now > 0);
    joined_now--;
}

static const struct sig_port port = {port_send, port_close, port_joined,
                                     port_left, NULL};

static struct sig_client *
client_new(struct sig *s, int i)
{
    struct sig_client *c = pm_xcalloc(1, sizeof *c);

    c->port = &port;
    c->realm = sig_realm_get(s, SIG_REALM_MESH, i == 2 ? "r" : "");
    c->realm->nclients++;
    return c;
}

/* What the role's ws_close does for a p2pmesh (or pending) client. */
static void
client_gone(struct sig *s, struct sig_client *c)
{
    struct sig_realm *r = c->realm;

    if (c->dialect == SIG_PENDING || c->dialect == SIG_MESH)
        sig_mesh_departed(s, c);
    free(c->token);
    free(c->sub);
    free(c);
    if (r != NULL) {
        r->nclients--;
        sig_realm_release(s, r);
    }
}

/* Would this first message make the client a y-webrtc one? */
static bool
picks_ywebrtc(const char *text, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(text, len);
    const char *t =
        cJSON_IsObject(o)
            ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "type"))
            : NULL;
    bool yes = t != NULL &&
               (strcmp(t, "subscribe") == 0 || strcmp(t, "unsubscribe") == 0 ||
                strcmp(t, "publish") == 0);

    cJSON_Delete(o);
    return yes;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sig s;
    const char *p = (const char *)data, *end = p + size;
    int i;

    pm_log_set_level(PM_LOG_FATAL);
    memset(&s, 0, sizeof s);
    s.conf = &conf;
    s.stats.peers = &peers_gauge;
    s.stats.joins = &counters[0];
    s.stats.relayed_mesh = &counters[1];
    s.stats.relayed_peerjs = &counters[2];
    s.stats.relayed_yws = &counters[3];
    s.stats.relayed_mailbox = &counters[4];
    s.stats.queued = &counters[5];
    s.stats.expired = &counters[6];
    s.stats.undeliverable = &counters[7];
    TAILQ_INIT(&s.by_expiry);
    peers_gauge = 0;
    joined_now = 0;
    for (i = 0; i < NCLIENTS; i++) {
        clients[i] = client_new(&s, i);
        closed[i] = false;
    }

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        int who = 0;
        char *msg;

        if (len > 0 && *p >= '0' && *p <= '9') {
            who = (*p - '0') % NCLIENTS;
            p++;
            len--;
        }
        /* an exact-size heap copy: ASan sees reads past its end */
        msg = pm_xmalloc(len ? len : 1);
        memcpy(msg, p, len);
        p += len + 1;
        if (clients[who]->dialect == SIG_PENDING && picks_ywebrtc(msg, len)) {
            free(msg);
            continue;
        }
        sig_client_message(&s, clients[who], msg, len);
        free(msg);
        {
            unsigned ids = 0;

            for (i = 0; i < NCLIENTS; i++)
                ids += clients[i]->id != NULL;
            FUZZ_CHECK(ids == joined_now);
        }
        for (i = 0; i < NCLIENTS; i++)
            if (closed[i]) { /* the connection closes: a new one comes */
                client_gone(&s, clients[i]);
                clients[i] = client_new(&s, i);
                closed[i] = false;
            }
    }
    for (i = 0; i < NCLIENTS; i++) {
        client_gone(&s, clients[i]);
        clients[i] = NULL;
    }
    FUZZ_CHECK(peers_gauge == 0 && joined_now == 0);
    FUZZ_CHECK(s.realms == NULL);
    sig_offline_free_all(&s);
    return 0;
}
