/*
 * pm_raft: canonical raft 0.15 inside the libevent loop. Each node owns a
 * private uv_loop_t with raft_uv (data dir) and its TCP transport on it,
 * the raft_fsm adapter that frames entries and snapshots for the role's
 * pm_raft_fsm, one small record per request, and the two libevent events
 * that drive the uv loop: a persistent read event on uv_backend_fd() and
 * a timer re-armed after every uv_run(UV_RUN_NOWAIT) pass from
 * uv_backend_timeout() (none when the uv loop is idle, so an idle node
 * wakes only for raft's own heartbeat tick).
 *
 * Nothing but the FSM runs inside raft's stack: finished requests wait on
 * a queue and the state/leader comparison for on_change is made after the
 * pass, and both are reported from the libevent callback once uv_run has
 * returned. A public call that reaches raft asks for a pass at once (raft
 * may have started uv timers or writes); one refused at once takes the
 * same queue, so its done runs after the caller returns.
 *
 * Close: raft_close runs from the libevent callback; when raft reports
 * closed, raft_uv and the transport are released, passes go on until the
 * uv loop holds nothing, then the loop is closed, both events freed and
 * the close's done called. Requests raft left unanswered complete with
 * PM_ECLOSED; on_change is no longer called once the close has begun.
 *
 * libuv writes to peers with write(2): the process must ignore SIGPIPE
 * (p2pmesh does).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "pm_log.h"
#include "pm_raft.h"
#include "pm_util.h"

#define PM_RAFT_NODELAY_MS 50 /* how often new sockets get TCP_NODELAY */
#define PM_RAFT_ELECTION_MS 1000
#define PM_RAFT_HEARTBEAT_MS 100
#define PM_RAFT_SNAPSHOT_THRESHOLD 1024
#define PM_RAFT_SNAPSHOT_TRAILING 8192

/* Frame: u32 payload length (little endian), u32 zero, payload, zero
 * padding to a multiple of 8 (raft_uv's entry alignment). */
#define FRAME_HDR 8
#define FRAME_MAX ((size_t)UINT32_MAX)

struct req {
    union {
        struct raft_apply apply;
        struct raft_change change;
    } u; /* first: raft hands back a pointer to it */
    struct pm_raft *r;
    pm_raft_done_fn done;
    void *arg;
    int status;
    TAILQ_ENTRY(req) link; /* on r->pending, then on r->finished */
};

TAILQ_HEAD(req_list, req);

struct pm_raft {
    uv_loop_t loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    /* One transfer at a time; kept here, not in a record, because raft
     * may still hold its embedded send after the callback. */
    struct raft_transfer transfer;
    struct req *transfer_req; /* the transfer under way, or NULL */
    struct event *uv_ev;      /* uv_backend_fd() readable */
    struct event *timer_ev;   /* next uv timer, or a pass asked for */
    bool pass_asked;          /* timer_ev set to fire at once */
    uint64_t nodelay_ms;      /* last sweep of raft_uv's TCP sockets */
    struct pm_raft_fsm user;
    void (*on_change)(void *arg, enum pm_raft_state state, uint64_t leader_id);
    void *arg;
    int last_state;
    raft_id last_leader;
    struct req_list pending;  /* raft holds their request */
    struct req_list finished; /* done to be called after the pass */
    /* closing */
    bool closing;      /* pm_raft_close called */
    bool raft_closing; /* raft_close called */
    bool raft_closed;  /* raft's close callback ran */
    bool released;     /* raft_uv and transport released */
    void (*close_done)(void *arg);
    void *close_arg;
};

/* The node around its embedded raft or transfer request. */
static struct pm_raft *
node_of_raft(struct raft *raft)
{
    return (struct pm_raft *)(void *)((char *)raft -
                                      offsetof(struct pm_raft, raft));
}

static struct pm_raft *
node_of_transfer(struct raft_transfer *req)
{
    return (struct pm_raft *)(void *)((char *)req -
                                      offsetof(struct pm_raft, transfer));
}

static void *
raft_xmalloc(size_t size)
{
    void *p = raft_malloc(size);

    if (p == NULL) {
        fprintf(stderr, "p2pmesh: out of memory allocating %zu bytes\n", size);
        abort();
    }
    return p;
}

static void
put_u32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t
get_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

size_t
pm_raft_framed_len(size_t len)
{
    return FRAME_HDR + ((len + 7) & ~(size_t)7);
}

void
pm_raft_frame_into(void *out, const void *data, size_t len)
{
    unsigned char *p = out;

    put_u32le(p, (uint32_t)len);
    put_u32le(p + 4, 0);
    if (len > 0)
        memcpy(p + FRAME_HDR, data, len);
    memset(p + FRAME_HDR + len, 0, pm_raft_framed_len(len) - FRAME_HDR - len);
}

bool
pm_raft_unframe(const void *buf, size_t buflen, const void **data, size_t *len)
{
    const unsigned char *p = buf;

    if (buflen < FRAME_HDR || get_u32le(p + 4) != 0 ||
        get_u32le(p) > buflen - FRAME_HDR)
        return false;
    *data = p + FRAME_HDR;
    *len = get_u32le(p);
    return true;
}

/* Frame data[0..len) into a raft_malloc'd buffer; len <= FRAME_MAX. */
static struct raft_buffer
frame(const void *data, size_t len)
{
    struct raft_buffer buf;

    buf.len = pm_raft_framed_len(len);
    buf.base = raft_xmalloc(buf.len);
    pm_raft_frame_into(buf.base, data, len);
    return buf;
}

/* The payload of a framed buffer; false when it is not one. */
static bool
unframe(const struct raft_buffer *buf, const void **data, size_t *len)
{
    return pm_raft_unframe(buf->base, buf->len, data, len);
}

static enum pm_raft_state
state_of(int raft_state)
{
    switch (raft_state) {
    case RAFT_FOLLOWER:
        return PM_RAFT_FOLLOWER;
    case RAFT_CANDIDATE:
        return PM_RAFT_CANDIDATE;
    case RAFT_LEADER:
        return PM_RAFT_LEADER;
    default:
        return PM_RAFT_UNAVAILABLE;
    }
}

static int
raft_role_of(enum pm_raft_role role)
{
    switch (role) {
    case PM_RAFT_VOTER:
        return RAFT_VOTER;
    case PM_RAFT_STANDBY:
        return RAFT_STANDBY;
    default:
        return RAFT_SPARE;
    }
}

static enum pm_raft_role
role_of(int raft_role)
{
    switch (raft_role) {
    case RAFT_VOTER:
        return PM_RAFT_VOTER;
    case RAFT_STANDBY:
        return PM_RAFT_STANDBY;
    default:
        return PM_RAFT_SPARE;
    }
}

/* raft's message for the last failure, or the code's text when empty. */
static const char *
reason(const char *errmsg, int rv)
{
    return errmsg[0] != '\0' ? errmsg : raft_strerror(rv);
}

/* A raft result as a PM_* code; unexpected ones are logged. */
static int
map_err(struct pm_raft *r, int rv, const char *what)
{
    char id[24];

    if (rv == 0)
        return PM_OK;
    if (r->closing)
        return PM_ECLOSED;
    switch (rv) {
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return PM_EUNAVAIL;
    case RAFT_CANTCHANGE:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return PM_ECONFLICT;
    case RAFT_NOTFOUND:
    case RAFT_BADID:
        return PM_ENOTFOUND;
    case RAFT_BADROLE:
        return PM_EINVAL;
    case RAFT_SHUTDOWN:
        return PM_ECLOSED;
    default:
        snprintf(id, sizeof id, "%" PRIu64, (uint64_t)r->raft.id);
        pm_log_kv(PM_LOG_WARN, "raft_request_failed", raft_strerror(rv), "node",
                  id, "request", what, "detail",
                  reason(raft_errmsg(&r->raft), rv), NULL);
        return PM_EIO;
    }
}

/* Ask for a pass of the uv loop as soon as the event base gets to it. */
static void
ask_pass(struct pm_raft *r)
{
    static const struct timeval now = {0, 0};

    r->pass_asked = true;
    evtimer_add(r->timer_ev, &now);
}

static struct req *
req_new(struct pm_raft *r, pm_raft_done_fn done, void *arg)
{
    struct req *q = pm_xcalloc(1, sizeof(*q));

    q->r = r;
    q->done = done;
    q->arg = arg;
    return q;
}

/* q (on r->pending) is answered: its done runs after the pass. */
static void
req_finish(struct req *q, int status)
{
    struct pm_raft *r = q->r;

    TAILQ_REMOVE(&r->pending, q, link);
    q->status = status;
    TAILQ_INSERT_TAIL(&r->finished, q, link);
}

/* q never reached raft: its done runs on the next pass. */
static void
req_refuse(struct req *q, int status)
{
    struct pm_raft *r = q->r;

    q->status = status;
    TAILQ_INSERT_TAIL(&r->finished, q, link);
    ask_pass(r);
}

/* --- the FSM adapter (called by raft, inside uv_run) --- */

static int
fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct pm_raft *r = fsm->data;
    const void *data;
    size_t len;

    *result = NULL;
    if (!unframe(buf, &data, &len)) {
        pm_log(PM_LOG_WARN, "raft_bad_entry",
               "skipped an entry of %zu bytes that is not framed", buf->len);
        return 0;
    }
    r->user.apply(r->user.arg, data, len);
    return 0;
}

static int
fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct pm_raft *r = fsm->data;
    size_t len = 0;
    void *data = r->user.snapshot(r->user.arg, &len);

    if (data == NULL)
        return RAFT_NOMEM;
    if (len > FRAME_MAX) {
        free(data);
        pm_log(PM_LOG_WARN, "raft_snapshot_too_big",
               "a snapshot of %zu bytes cannot be framed", len);
        return RAFT_TOOBIG;
    }
    *bufs = raft_xmalloc(sizeof(**bufs));
    **bufs = frame(data, len);
    *n = 1;
    free(data);
    return 0;
}

/* On success the buffer is ours to free; on failure raft frees it. */
static int
fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct pm_raft *r = fsm->data;
    const void *data;
    size_t len;
    int rc;

    if (!unframe(buf, &data, &len)) {
        pm_log(PM_LOG_WARN, "raft_bad_snapshot",
               "a snapshot of %zu bytes is not framed", buf->len);
        return RAFT_MALFORMED;
    }
    rc = r->user.restore(r->user.arg, data, len);
    if (rc != PM_OK) {
        pm_log(PM_LOG_WARN, "raft_restore_failed",
               "the role refused a snapshot of %zu bytes (%d)", len, rc);
        return RAFT_MALFORMED;
    }
    raft_free(buf->base);
    return 0;
}

/* --- request callbacks (called by raft) --- */

static void
on_applied(struct raft_apply *req, int status, void *result)
{
    struct req *q = (struct req *)(void *)req;

    req_finish(q, map_err(q->r, status, "apply"));
}

static void
on_changed(struct raft_change *req, int status)
{
    struct req *q = (struct req *)(void *)req;

    req_finish(q, map_err(q->r, status, "change"));
}

static void
on_transferred(struct raft_transfer *req)
{
    struct pm_raft *r = node_of_transfer(req);
    struct req *q = r->transfer_req;
    raft_id leader;
    const char *addr;
    int status = PM_EUNAVAIL;

    r->transfer_req = NULL;
    raft_leader(&r->raft, &leader, &addr);
    if (r->closing)
        status = PM_ECLOSED;
    else if (leader != 0 && leader != r->raft.id)
        status = PM_OK;
    req_finish(q, status);
}

static void
on_raft_closed(struct raft *raft)
{
    struct pm_raft *r = node_of_raft(raft);

    r->raft_closed = true;
}

/* --- the pass --- */

static void
note_change(struct pm_raft *r)
{
    int state = raft_state(&r->raft);
    raft_id leader;
    const char *addr;
    char id[24], lid[24], term[24];

    raft_leader(&r->raft, &leader, &addr);
    if (state == r->last_state && leader == r->last_leader)
        return;
    r->last_state = state;
    r->last_leader = leader;
    snprintf(id, sizeof id, "%" PRIu64, (uint64_t)r->raft.id);
    snprintf(lid, sizeof lid, "%" PRIu64, (uint64_t)leader);
    snprintf(term, sizeof term, "%" PRIu64, (uint64_t)r->raft.current_term);
    pm_log_kv(PM_LOG_INFO, "raft_state", "raft state or leader changed", "node",
              id, "state", pm_raft_state_name(state_of(state)), "leader", lid,
              "term", term, NULL);
    if (r->on_change != NULL)
        r->on_change(r->arg, state_of(state), leader);
}

static void
report_finished(struct pm_raft *r)
{
    struct req *q;

    while ((q = TAILQ_FIRST(&r->finished)) != NULL) {
        TAILQ_REMOVE(&r->finished, q, link);
        if (q->done != NULL)
            q->done(q->arg, q->status);
        free(q);
    }
}

static void
schedule(struct pm_raft *r)
{
    struct timeval tv;
    int ms;

    if (r->pass_asked)
        return;
    ms = uv_loop_alive(&r->loop) ? uv_backend_timeout(&r->loop) : -1;
    if (ms < 0) {
        evtimer_del(r->timer_ev);
        return;
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(r->timer_ev, &tv);
}

/* Free the events (before the loop closes its backend fd), the loop and
 * r; returns uv_loop_close's result. */
static int
free_node(struct pm_raft *r)
{
    int rc;

    event_free(r->uv_ev);
    event_free(r->timer_ev);
    rc = uv_loop_close(&r->loop);
    free(r);
    return rc;
}

static void
finish_close(struct pm_raft *r)
{
    void (*done)(void *arg) = r->close_done;
    void *arg = r->close_arg;
    int rc = free_node(r);

    if (rc != 0)
        pm_log(PM_LOG_WARN, "raft_uv_busy", "uv loop not closed: %s",
               uv_strerror(rc));
    if (done != NULL)
        done(arg);
}

/* raft_uv leaves Nagle on, so a small AppendEntries waits for the
 * peer's delayed ACK (40 ms): turn it off on every TCP handle. */
static void
nodelay_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h))
        uv_tcp_nodelay((uv_tcp_t *)h, 1);
}

static void
nodelay_sweep(struct pm_raft *r)
{
    uint64_t now = pm_now_ms();

    if (now - r->nodelay_ms < PM_RAFT_NODELAY_MS)
        return;
    r->nodelay_ms = now;
    uv_walk(&r->loop, nodelay_cb, NULL);
}

static void
run_pass(evutil_socket_t fd, short what, void *arg)
{
    struct pm_raft *r = arg;
    struct req *q;

    r->pass_asked = false;
    if (r->closing && !r->raft_closing) {
        r->raft_closing = true;
        raft_close(&r->raft, on_raft_closed);
    }
    uv_run(&r->loop, UV_RUN_NOWAIT);
    if (!r->closing)
        nodelay_sweep(r);
    if (r->raft_closed && !r->released) {
        r->released = true;
        raft_uv_close(&r->io);
        raft_uv_tcp_close(&r->transport);
        while ((q = TAILQ_FIRST(&r->pending)) != NULL)
            req_finish(q, PM_ECLOSED);
    }
    if (!r->closing)
        note_change(r);
    report_finished(r);
    if (r->released && !uv_loop_alive(&r->loop)) {
        finish_close(r);
        return;
    }
    schedule(r);
}

/* --- public API --- */

/* mkdir -p dir. */
static int
make_dir(const char *dir, char *err, size_t errlen)
{
    char *path = pm_xstrdup(dir), *p, c;
    int rc = PM_OK;

    for (p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        c = *p;
        *p = '\0';
        if (mkdir(path, 0750) != 0 && errno != EEXIST) {
            rc = pm_errf(err, errlen, PM_EIO, "cannot create %s: %s", path,
                         strerror(errno));
            break;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    free(path);
    return rc;
}

struct pm_raft *
pm_raft_new(struct event_base *base, const struct pm_raft_opts *opts, char *err,
            size_t errlen)
{
    struct pm_raft *r;
    unsigned election =
        opts->election_ms ? opts->election_ms : PM_RAFT_ELECTION_MS;
    unsigned heartbeat =
        opts->heartbeat_ms ? opts->heartbeat_ms : PM_RAFT_HEARTBEAT_MS;
    int rv;

    if (opts->id == 0 || opts->address == NULL || opts->dir == NULL ||
        opts->dir[0] == '\0' || opts->fsm.apply == NULL ||
        opts->fsm.snapshot == NULL || opts->fsm.restore == NULL) {
        pm_errf(err, errlen, PM_EINVAL,
                "raft needs an id, an address, a dir and the fsm callbacks");
        return NULL;
    }
    if (heartbeat >= election) {
        pm_errf(err, errlen, PM_EINVAL,
                "raft heartbeat (%u ms) must be shorter than the election "
                "timeout (%u ms)",
                heartbeat, election);
        return NULL;
    }
    if (make_dir(opts->dir, err, errlen) != PM_OK)
        return NULL;

    r = pm_xcalloc(1, sizeof(*r));
    r->user = opts->fsm;
    r->on_change = opts->on_change;
    r->arg = opts->arg;
    r->last_state = RAFT_UNAVAILABLE;
    TAILQ_INIT(&r->pending);
    TAILQ_INIT(&r->finished);
    rv = uv_loop_init(&r->loop);
    if (rv != 0) {
        pm_errf(err, errlen, PM_EIO, "uv loop: %s", uv_strerror(rv));
        free(r);
        return NULL;
    }
    r->uv_ev = event_new(base, uv_backend_fd(&r->loop), EV_READ | EV_PERSIST,
                         run_pass, r);
    r->timer_ev = evtimer_new(base, run_pass, r);
    event_add(r->uv_ev, NULL);

    rv = raft_uv_tcp_init(&r->transport, &r->loop);
    if (rv != 0) {
        pm_errf(err, errlen, PM_EIO, "raft transport: %s", raft_strerror(rv));
        goto fail_loop;
    }
    if (opts->bind != NULL) {
        rv = raft_uv_tcp_set_bind_address(&r->transport, opts->bind);
        if (rv != 0) {
            pm_errf(err, errlen, PM_EIO, "raft bind address %s: %s", opts->bind,
                    reason(r->transport.errmsg, rv));
            goto fail_transport;
        }
    }
    rv = raft_uv_init(&r->io, &r->loop, opts->dir, &r->transport);
    if (rv != 0) {
        pm_errf(err, errlen, PM_EIO, "raft io on %s: %s", opts->dir,
                reason(r->io.errmsg, rv));
        goto fail_transport;
    }
    r->fsm.version = 1;
    r->fsm.data = r;
    r->fsm.apply = fsm_apply;
    r->fsm.snapshot = fsm_snapshot;
    r->fsm.restore = fsm_restore;
    rv = raft_init(&r->raft, &r->io, &r->fsm, opts->id, opts->address);
    if (rv != 0) {
        pm_errf(err, errlen, PM_EIO, "raft init: %s",
                reason(raft_errmsg(&r->raft), rv));
        goto fail_io;
    }
    raft_set_election_timeout(&r->raft, election);
    raft_set_heartbeat_timeout(&r->raft, heartbeat);
    raft_set_snapshot_threshold(&r->raft, opts->snapshot_threshold
                                              ? opts->snapshot_threshold
                                              : PM_RAFT_SNAPSHOT_THRESHOLD);
    raft_set_snapshot_trailing(&r->raft, opts->snapshot_trailing
                                             ? opts->snapshot_trailing
                                             : PM_RAFT_SNAPSHOT_TRAILING);
    raft_set_pre_vote(&r->raft, true);
    return r;

fail_io:
    raft_uv_close(&r->io);
fail_transport:
    raft_uv_tcp_close(&r->transport);
fail_loop:
    free_node(r);
    return NULL;
}

int
pm_raft_bootstrap(struct pm_raft *r, const struct pm_raft_server *servers,
                  size_t n, char *err, size_t errlen)
{
    struct raft_configuration conf;
    size_t i;
    int rv = 0;

    raft_configuration_init(&conf);
    for (i = 0; i < n && rv == 0; i++)
        rv = raft_configuration_add(&conf, servers[i].id, servers[i].address,
                                    raft_role_of(servers[i].role));
    if (rv != 0) {
        raft_configuration_close(&conf);
        return pm_errf(err, errlen, PM_EINVAL, "raft server %" PRIu64 ": %s",
                       servers[i - 1].id, raft_strerror(rv));
    }
    rv = raft_bootstrap(&r->raft, &conf);
    raft_configuration_close(&conf);
    if (rv == RAFT_CANTBOOTSTRAP)
        return pm_errf(err, errlen, PM_ECONFLICT,
                       "raft data dir already holds state");
    if (rv != 0)
        return pm_errf(err, errlen, PM_EIO, "raft bootstrap: %s",
                       reason(raft_errmsg(&r->raft), rv));
    return PM_OK;
}

int
pm_raft_start(struct pm_raft *r, char *err, size_t errlen)
{
    int rv = raft_start(&r->raft);

    ask_pass(r);
    if (rv != 0)
        return pm_errf(err, errlen, PM_EIO, "raft start: %s",
                       reason(raft_errmsg(&r->raft), rv));
    return PM_OK;
}

void
pm_raft_apply(struct pm_raft *r, const void *data, size_t len,
              pm_raft_done_fn done, void *arg)
{
    struct req *q = req_new(r, done, arg);
    struct raft_buffer buf;
    int rv;

    if (r->closing) {
        req_refuse(q, PM_ECLOSED);
        return;
    }
    if (len > FRAME_MAX) {
        req_refuse(q, PM_ELIMIT);
        return;
    }
    buf = frame(data, len);
    TAILQ_INSERT_TAIL(&r->pending, q, link);
    rv = raft_apply(&r->raft, &q->u.apply, &buf, 1, on_applied);
    if (rv != 0) {
        raft_free(buf.base);
        TAILQ_REMOVE(&r->pending, q, link);
        req_refuse(q, map_err(r, rv, "apply"));
        return;
    }
    ask_pass(r);
}

enum change_kind { CHANGE_ADD, CHANGE_ASSIGN, CHANGE_REMOVE };

static void
change(struct pm_raft *r, enum change_kind kind, uint64_t id,
       const char *address, enum pm_raft_role role, pm_raft_done_fn done,
       void *arg)
{
    struct req *q = req_new(r, done, arg);
    int rv;

    if (r->closing) {
        req_refuse(q, PM_ECLOSED);
        return;
    }
    TAILQ_INSERT_TAIL(&r->pending, q, link);
    if (kind == CHANGE_ADD)
        rv = raft_add(&r->raft, &q->u.change, id, address, on_changed);
    else if (kind == CHANGE_ASSIGN)
        rv = raft_assign(&r->raft, &q->u.change, id, raft_role_of(role),
                         on_changed);
    else
        rv = raft_remove(&r->raft, &q->u.change, id, on_changed);
    if (rv != 0) {
        TAILQ_REMOVE(&r->pending, q, link);
        req_refuse(q, map_err(r, rv, "change"));
        return;
    }
    ask_pass(r);
}

void
pm_raft_add(struct pm_raft *r, uint64_t id, const char *address,
            pm_raft_done_fn done, void *arg)
{
    change(r, CHANGE_ADD, id, address, PM_RAFT_SPARE, done, arg);
}

void
pm_raft_assign(struct pm_raft *r, uint64_t id, enum pm_raft_role role,
               pm_raft_done_fn done, void *arg)
{
    change(r, CHANGE_ASSIGN, id, NULL, role, done, arg);
}

void
pm_raft_remove(struct pm_raft *r, uint64_t id, pm_raft_done_fn done, void *arg)
{
    change(r, CHANGE_REMOVE, id, NULL, PM_RAFT_SPARE, done, arg);
}

void
pm_raft_transfer(struct pm_raft *r, uint64_t id, pm_raft_done_fn done,
                 void *arg)
{
    struct req *q = req_new(r, done, arg);
    int rv;

    if (r->closing) {
        req_refuse(q, PM_ECLOSED);
        return;
    }
    if (r->transfer_req != NULL) {
        req_refuse(q, PM_EUNAVAIL);
        return;
    }
    TAILQ_INSERT_TAIL(&r->pending, q, link);
    r->transfer_req = q;
    rv = raft_transfer(&r->raft, &r->transfer, id, on_transferred);
    if (rv != 0) {
        r->transfer_req = NULL;
        TAILQ_REMOVE(&r->pending, q, link);
        req_refuse(q, map_err(r, rv, "transfer"));
        return;
    }
    ask_pass(r);
}

/* raft's getters take a non-const struct raft but only read it. */
static struct raft *
raft_of(const struct pm_raft *r)
{
    return (struct raft *)&r->raft;
}

enum pm_raft_state
pm_raft_state(const struct pm_raft *r)
{
    return state_of(raft_state(raft_of(r)));
}

const char *
pm_raft_state_name(enum pm_raft_state s)
{
    switch (s) {
    case PM_RAFT_FOLLOWER:
        return "follower";
    case PM_RAFT_CANDIDATE:
        return "candidate";
    case PM_RAFT_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

uint64_t
pm_raft_leader(const struct pm_raft *r, const char **addr)
{
    raft_id id;
    const char *a;

    raft_leader(raft_of(r), &id, &a);
    if (addr != NULL)
        *addr = a != NULL ? a : "";
    return id;
}

uint64_t
pm_raft_id(const struct pm_raft *r)
{
    return r->raft.id;
}

size_t
pm_raft_servers(const struct pm_raft *r, struct pm_raft_server *out, size_t max)
{
    const struct raft_configuration *c = &r->raft.configuration;
    size_t i;

    for (i = 0; i < c->n && i < max; i++) {
        out[i].id = c->servers[i].id;
        pm_strlcpy(out[i].address, c->servers[i].address,
                   sizeof(out[i].address));
        out[i].role = role_of(c->servers[i].role);
    }
    return c->n;
}

uint64_t
pm_raft_applied(const struct pm_raft *r)
{
    return raft_last_applied(raft_of(r));
}

void
pm_raft_close(struct pm_raft *r, void (*done)(void *arg), void *arg)
{
    PM_ASSERT(!r->closing);
    r->closing = true;
    r->close_done = done;
    r->close_arg = arg;
    ask_pass(r);
}
