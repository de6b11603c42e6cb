/*
 * game_peer: the peer link between the nodes of a cluster (game.peer_port,
 * GRPC_PORT). Each node keeps one outgoing TCP connection to every other
 * member and sends its frames there; frames arrive on the connections
 * other nodes opened to it. A frame is a 4-byte big-endian length, a
 * type byte, two big-endian 64-bit words (a, b) and a payload:
 *
 *   HELLO      a = sender id                   first frame of a connection
 *   PING/PONG                                  liveness, every 250 ms
 *   SUBSCRIBE  a = game                        send me this game's events
 *   SNAPREQ    a = game, b = session           a Snapshot for one session
 *   EVENT      a = game, b = session (0: all)  payload = GameEvent message
 *   COMMAND    a = game, b = seq               payload = direction byte, user
 *   PROPOSE    a = hops                        payload = entry for the leader
 *   JOIN                                       payload = {"id","raft","peer"}
 *   LEAVE      a = node                        remove node (leader)
 *
 * Events are accepted only from the node the replicated state names as
 * the game's owner (a stale owner is fenced out). A link is down from
 * the moment its connection fails or goes silent for 1 s; game_peer_down_ms
 * tells the cluster how long, which drives failover.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "game.h"
#include "pm_listener.h"
#include "pm_log.h"
#include "pm_raft.h"
#include "pm_server.h"
#include "pm_util.h"

#define PEER_HDR 21 /* length 4 + type 1 + a 8 + b 8 */
#define PEER_MAX_FRAME (4u << 20)
#define PEER_MAX_QUEUED (16u << 20)
#define PEER_PING_MS 250
#define PEER_SILENT_MS 1000
#define PEER_RETRY_MS 200

enum peer_type {
    PEER_HELLO = 1,
    PEER_PING,
    PEER_PONG,
    PEER_SUBSCRIBE,
    PEER_SNAPREQ,
    PEER_EVENT,
    PEER_COMMAND,
    PEER_PROPOSE,
    PEER_JOIN,
    PEER_LEAVE
};

/* A connection, outgoing (to a member, or a one-shot JOIN) or incoming. */
struct peer_conn {
    struct game_peer *p;
    struct bufferevent *bev;
    bool outgoing, connected, oneshot;
    uint64_t node; /* outgoing: the member; incoming: from HELLO */
    char addr[GAME_ADDR_MAX];
    uint64_t last_rx_ms;
    uint64_t down_since_ms; /* outgoing, while not connected */
    struct event *timer;    /* outgoing: ping and reconnect */
    char *pending;          /* one-shot: the JOIN payload */
    struct peer_conn *next;
};

struct game_peer {
    struct game_node *gn;
    struct pm_listener *listener;
    struct peer_conn *conns;
};

static void conn_free(struct peer_conn *pc);
static void conn_connect(struct peer_conn *pc);

/* ---- framing ------------------------------------------------------------- */

static void
put64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t
get64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void
send_frame(struct peer_conn *pc, enum peer_type t, uint64_t a, uint64_t b,
           const void *data, size_t len)
{
    struct evbuffer *out;
    uint8_t h[PEER_HDR];
    uint32_t n = (uint32_t)(PEER_HDR - 4 + len);

    if (pc == NULL || !pc->connected)
        return;
    out = bufferevent_get_output(pc->bev);
    if (evbuffer_get_length(out) > PEER_MAX_QUEUED) {
        pm_log(PM_LOG_WARN, "peer_backlog",
               "peer %" PRIu64 " is not reading; dropping the link", pc->node);
        pc->connected = false;
        bufferevent_free(pc->bev);
        pc->bev = NULL;
        pc->down_since_ms = pm_now_ms();
        conn_connect(pc);
        return;
    }
    h[0] = (uint8_t)(n >> 24);
    h[1] = (uint8_t)(n >> 16);
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
    h[4] = (uint8_t)t;
    put64(h + 5, a);
    put64(h + 13, b);
    evbuffer_add(out, h, sizeof h);
    if (len > 0)
        evbuffer_add(out, data, len);
}

static struct peer_conn *
link_to(struct game_node *gn, uint64_t node)
{
    struct peer_conn *pc;

    if (gn->peer == NULL)
        return NULL;
    for (pc = gn->peer->conns; pc != NULL; pc = pc->next)
        if (pc->outgoing && !pc->oneshot && pc->node == node)
            return pc;
    return NULL;
}

/* ---- what arrives -------------------------------------------------------- */

static void
on_propose(struct game_node *gn, uint64_t hops, const uint8_t *d, size_t n)
{
    uint64_t leader;

    if (gn->raft == NULL)
        return;
    if (pm_raft_state(gn->raft) == PM_RAFT_LEADER) {
        game_ctl_append(gn, d, n);
        return;
    }
    leader = pm_raft_leader(gn->raft, NULL);
    if (hops < 2 && leader != 0 && leader != gn->node_id)
        send_frame(link_to(gn, leader), PEER_PROPOSE, hops + 1, 0, d, n);
}

static void
on_join(struct game_node *gn, const uint8_t *d, size_t n)
{
    cJSON *j = cJSON_ParseWithLength((const char *)d, n);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    const cJSON *raft = cJSON_GetObjectItemCaseSensitive(j, "raft");
    const cJSON *peer = cJSON_GetObjectItemCaseSensitive(j, "peer");
    uint64_t leader;

    if (cJSON_IsString(id) && cJSON_IsString(raft) && cJSON_IsString(peer)) {
        if (game_ctl_is_leader(gn))
            game_cluster_join_request(gn, strtoull(id->valuestring, NULL, 10),
                                      raft->valuestring, peer->valuestring);
        else if (gn->raft != NULL &&
                 (leader = pm_raft_leader(gn->raft, NULL)) != 0)
            send_frame(link_to(gn, leader), PEER_JOIN, 0, 0, d, n);
    }
    cJSON_Delete(j);
}

static void
on_event(struct game_node *gn, struct peer_conn *pc, uint64_t gid, uint64_t sid,
         const uint8_t *d, size_t n)
{
    struct fsm_game *fg = game_fsm_game(gn, gid);
    struct game_session *s;

    if (fg == NULL || fg->owner != pc->node)
        return; /* not (or no longer) the owner: fenced */
    if (sid == 0) {
        game_watch_deliver(gn, gid, (const char *)d, n);
    } else if ((s = game_session_find(gn, sid)) != NULL && s->watching == gid) {
        game_send_raw(s, (const char *)d, n);
    }
}

static void
on_command(struct game_node *gn, uint64_t gid, uint64_t seq, const uint8_t *d,
           size_t n)
{
    struct game_room *r = game_room_find(gn, gid);
    char user[GAME_USER_MAX + 1];

    if (r == NULL || n < 2 || n - 1 > GAME_USER_MAX || d[0] > GAME_LEFT)
        return;
    memcpy(user, d + 1, n - 1);
    user[n - 1] = '\0';
    game_room_command(gn, r, user, (int64_t)seq, (enum game_dir)d[0]);
}

static void
on_frame(struct peer_conn *pc, enum peer_type t, uint64_t a, uint64_t b,
         const uint8_t *d, size_t n)
{
    struct game_node *gn = pc->p->gn;
    struct game_room *r;
    char *msg;
    size_t len;

    if (t != PEER_HELLO && !pc->outgoing && pc->node == 0)
        return; /* who is this? */
    switch (t) {
    case PEER_HELLO:
        pc->node = a;
        break;
    case PEER_PING:
        send_frame(pc, PEER_PONG, 0, 0, NULL, 0);
        break;
    case PEER_PONG:
        break;
    case PEER_SUBSCRIBE:
        if ((r = game_room_find(gn, a)) != NULL)
            game_room_subscribe(gn, r, pc->node);
        else
            game_room_early_subscribe(gn, pc->node, a);
        break;
    case PEER_SNAPREQ:
        if ((r = game_room_find(gn, a)) != NULL) {
            msg = game_room_snapshot_msg(r, &len);
            game_peer_event(gn, pc->node, a, b, msg, len);
            free(msg);
        }
        break;
    case PEER_EVENT:
        on_event(gn, pc, a, b, d, n);
        break;
    case PEER_COMMAND:
        on_command(gn, a, b, d, n);
        break;
    case PEER_PROPOSE:
        on_propose(gn, a, d, n);
        break;
    case PEER_JOIN:
        on_join(gn, d, n);
        break;
    case PEER_LEAVE:
        game_cluster_leave_request(gn, a);
        break;
    }
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct peer_conn *pc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t *h;
    uint32_t n;

    pc->last_rx_ms = pm_now_ms();
    while (evbuffer_get_length(in) >= PEER_HDR) {
        h = evbuffer_pullup(in, PEER_HDR);
        n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 |
            h[3];
        if (n < PEER_HDR - 4 || n > PEER_MAX_FRAME) {
            pm_log(PM_LOG_WARN, "peer_bad_frame",
                   "a frame of %u bytes from %s; closing", n, pc->addr);
            conn_free(pc);
            return;
        }
        if (evbuffer_get_length(in) < 4 + (size_t)n)
            return;
        h = evbuffer_pullup(in, 4 + (ssize_t)n);
        on_frame(pc, (enum peer_type)h[4], get64(h + 5), get64(h + 13),
                 h + PEER_HDR, n - (PEER_HDR - 4));
        evbuffer_drain(in, 4 + (size_t)n);
        if (pc->bev != bev)
            return; /* the link was replaced while handling the frame */
    }
}

/* ---- connections --------------------------------------------------------- */

static void
unlink_conn(struct peer_conn *pc)
{
    struct peer_conn **pp;

    for (pp = &pc->p->conns; *pp != NULL; pp = &(*pp)->next)
        if (*pp == pc) {
            *pp = pc->next;
            return;
        }
}

static void
conn_free(struct peer_conn *pc)
{
    unlink_conn(pc);
    if (pc->bev != NULL)
        bufferevent_free(pc->bev);
    if (pc->timer != NULL)
        event_free(pc->timer);
    free(pc->pending);
    free(pc);
}

static void
arm(struct peer_conn *pc, unsigned ms)
{
    struct timeval tv = {0, (suseconds_t)ms * 1000};

    evtimer_add(pc->timer, &tv);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct peer_conn *pc = arg;
    struct game_node *gn = pc->p->gn;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        uint64_t was_down = pc->down_since_ms;

        pc->connected = true;
        pc->last_rx_ms = pm_now_ms();
        pc->down_since_ms = 0;
        send_frame(pc, PEER_HELLO, gn->node_id, 0, NULL, 0);
        if (pc->pending != NULL)
            send_frame(pc, PEER_JOIN, 0, 0, pc->pending, strlen(pc->pending));
        if (!pc->oneshot) {
            arm(pc, PEER_PING_MS);
            if (was_down != 0)
                game_watch_link_up(gn, pc->node);
        }
        return;
    }
    if (!pc->outgoing || pc->oneshot) {
        conn_free(pc);
        return;
    }
    if (pc->connected)
        pm_log(PM_LOG_WARN, "peer_down",
               "peer link to node %" PRIu64 " (%s) lost", pc->node, pc->addr);
    pc->connected = false;
    if (pc->down_since_ms == 0)
        pc->down_since_ms = pm_now_ms();
    bufferevent_free(pc->bev);
    pc->bev = NULL;
    arm(pc, PEER_RETRY_MS);
}

static void
oneshot_written(struct bufferevent *bev, void *arg)
{
    struct peer_conn *pc = arg;

    (void)bev;
    if (pc->connected)
        conn_free(pc);
}

static void
conn_connect(struct peer_conn *pc)
{
    struct game_node *gn = pc->p->gn;
    struct sockaddr_storage ss;
    int sslen = sizeof ss;

    if (evutil_parse_sockaddr_port(pc->addr, (struct sockaddr *)&ss, &sslen) !=
        0) {
        pm_log_kv(PM_LOG_WARN, "peer_bad_addr", "cannot parse a peer address",
                  "addr", pc->addr, NULL);
        arm(pc, 1000);
        return;
    }
    pc->bev = bufferevent_socket_new(pm_server_base(gn->srv), -1,
                                     BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(pc->bev, read_cb, pc->oneshot ? oneshot_written : NULL,
                      event_cb, pc);
    bufferevent_enable(pc->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(pc->bev, (struct sockaddr *)&ss, sslen) !=
        0) {
        bufferevent_free(pc->bev);
        pc->bev = NULL;
        if (pc->oneshot) {
            conn_free(pc);
            return;
        }
        arm(pc, PEER_RETRY_MS);
        return;
    }
    {
        int one = 1;

        setsockopt(bufferevent_getfd(pc->bev), IPPROTO_TCP, TCP_NODELAY, &one,
                   sizeof one);
    }
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct peer_conn *pc = arg;

    (void)fd;
    (void)what;
    if (!pc->connected) {
        if (pc->bev == NULL)
            conn_connect(pc);
        return;
    }
    send_frame(pc, PEER_PING, 0, 0, NULL, 0);
    arm(pc, PEER_PING_MS);
}

/* A link to node; with pending (taken), a one-shot JOIN to addr. */
static void
conn_out(struct game_peer *p, uint64_t node, const char *addr, char *pending)
{
    struct peer_conn *pc = pm_xcalloc(1, sizeof *pc);

    pc->p = p;
    pc->outgoing = true;
    pc->oneshot = pending != NULL;
    pc->pending = pending;
    pc->node = node;
    pm_strlcpy(pc->addr, addr, sizeof pc->addr);
    pc->down_since_ms = pm_now_ms();
    pc->timer = evtimer_new(pm_server_base(p->gn->srv), timer_cb, pc);
    pc->next = p->conns;
    p->conns = pc;
    conn_connect(pc);
}

static void
accept_cb(int fd, const struct sockaddr *sa, void *arg)
{
    struct game_peer *p = arg;
    struct peer_conn *pc = pm_xcalloc(1, sizeof *pc);
    int one = 1;

    (void)sa;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evutil_make_socket_nonblocking(fd);
    pc->p = p;
    pc->connected = true;
    pc->bev = bufferevent_socket_new(pm_server_base(p->gn->srv), fd,
                                     BEV_OPT_CLOSE_ON_FREE);
    pm_strlcpy(pc->addr, "incoming", sizeof pc->addr);
    bufferevent_setcb(pc->bev, read_cb, NULL, event_cb, pc);
    bufferevent_enable(pc->bev, EV_READ | EV_WRITE);
    pc->next = p->conns;
    p->conns = pc;
}

/* ---- API ----------------------------------------------------------------- */

struct game_peer *
game_peer_new(struct game_node *gn, char *err, size_t errlen)
{
    struct game_peer *p = pm_xcalloc(1, sizeof *p);
    const struct pm_core_conf *core = pm_server_conf(gn->srv);

    p->gn = gn;
    p->listener =
        pm_listener_new(pm_server_base(gn->srv), core->addr,
                        (int)gn->conf->peer_port, accept_cb, p, err, errlen);
    if (p->listener == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

void
game_peer_free(struct game_peer *p)
{
    if (p == NULL)
        return;
    while (p->conns != NULL)
        conn_free(p->conns);
    pm_listener_free(p->listener);
    free(p);
}

void
game_peer_sync(struct game_node *gn)
{
    struct fsm_member *m, *t;
    struct peer_conn *pc, *next;

    if (gn->peer == NULL)
        return;
    for (pc = gn->peer->conns; pc != NULL; pc = next) {
        next = pc->next;
        if (!pc->outgoing || pc->oneshot)
            continue;
        m = game_fsm_member(gn, pc->node);
        if (m == NULL || strcmp(m->peer_addr, pc->addr) != 0)
            conn_free(pc);
    }
    HASH_ITER(hh, gn->fsm.members, m, t)
    {
        if (m->id != gn->node_id && link_to(gn, m->id) == NULL)
            conn_out(gn->peer, m->id, m->peer_addr, NULL);
    }
}

uint64_t
game_peer_down_ms(struct game_node *gn, uint64_t node)
{
    struct peer_conn *pc;
    uint64_t now = pm_now_ms();

    if (node == gn->node_id)
        return 0;
    pc = link_to(gn, node);
    if (pc == NULL)
        return UINT64_MAX / 2; /* no member by that id: never reached */
    if (pc->connected && now - pc->last_rx_ms <= PEER_SILENT_MS)
        return 0;
    if (pc->connected)
        return now - pc->last_rx_ms;
    return now - pc->down_since_ms;
}

void
game_peer_command(struct game_node *gn, uint64_t node, uint64_t gid,
                  const char *user, int64_t seq, enum game_dir dir)
{
    uint8_t buf[1 + GAME_USER_MAX];
    size_t n = strlen(user);

    buf[0] = (uint8_t)dir;
    memcpy(buf + 1, user, n);
    send_frame(link_to(gn, node), PEER_COMMAND, gid, (uint64_t)seq, buf, n + 1);
}

void
game_peer_subscribe(struct game_node *gn, uint64_t node, uint64_t gid)
{
    send_frame(link_to(gn, node), PEER_SUBSCRIBE, gid, 0, NULL, 0);
}

void
game_peer_snapshot_req(struct game_node *gn, uint64_t node, uint64_t gid,
                       uint64_t session)
{
    send_frame(link_to(gn, node), PEER_SNAPREQ, gid, session, NULL, 0);
}

void
game_peer_event(struct game_node *gn, uint64_t node, uint64_t gid,
                uint64_t session, const char *msg, size_t len)
{
    send_frame(link_to(gn, node), PEER_EVENT, gid, session, msg, len);
}

void
game_peer_propose(struct game_node *gn, uint64_t node, const char *entry,
                  size_t len)
{
    send_frame(link_to(gn, node), PEER_PROPOSE, 0, 0, entry, len);
}

void
game_peer_leave(struct game_node *gn, uint64_t node)
{
    uint64_t leader = gn->raft != NULL ? pm_raft_leader(gn->raft, NULL) : 0;

    send_frame(link_to(gn, leader), PEER_LEAVE, node, 0, NULL, 0);
}

void
game_peer_join(struct game_node *gn, const char *peer_addr)
{
    cJSON *j;
    char num[24], *txt;

    if (gn->peer == NULL)
        return;
    j = cJSON_CreateObject();
    snprintf(num, sizeof num, "%" PRIu64, gn->node_id);
    cJSON_AddStringToObject(j, "id", num);
    cJSON_AddStringToObject(j, "raft", gn->raft_addr);
    cJSON_AddStringToObject(j, "peer", gn->peer_addr);
    txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    conn_out(gn->peer, 0, peer_addr, txt);
}
