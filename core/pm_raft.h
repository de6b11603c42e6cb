/*
 * pm_raft: canonical raft 0.15 (raft_uv over TCP) inside the libevent
 * loop, so roles get a replicated log without touching raft.h or libuv.
 * The bridge owns a private uv_loop_t and drives it from the event base
 * (a read event on uv_backend_fd(), a timer from uv_backend_timeout(),
 * uv_run(UV_RUN_NOWAIT)), so every raft callback and every callback of
 * this module runs on the loop thread with no locks.
 *
 * Entries and snapshots are opaque bytes to the bridge; it frames each
 * with its length and pads it to 8 bytes (raft_uv needs 8-byte aligned
 * payloads), and hands the role the exact bytes back.
 *
 * Ownership: bytes passed in are copied; bytes handed to callbacks are
 * borrowed for the call. Loop thread only. A struct pm_raft is freed
 * with pm_raft_close; never from inside one of its own callbacks.
 */
#ifndef PM_RAFT_H
#define PM_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pm_raft;

enum pm_raft_state {
    PM_RAFT_UNAVAILABLE = 0, /* not started, or shutting down */
    PM_RAFT_FOLLOWER,
    PM_RAFT_CANDIDATE,
    PM_RAFT_LEADER
};

enum pm_raft_role {
    PM_RAFT_SPARE = 0, /* in the configuration, no log, no vote */
    PM_RAFT_STANDBY,   /* gets the log, does not vote */
    PM_RAFT_VOTER
};

/* One member of the configuration. */
struct pm_raft_server {
    uint64_t id;
    char address[64]; /* "host:port" as peers dial it */
    enum pm_raft_role role;
};

/*
 * The replicated state machine, supplied by the role. apply runs on
 * every node for every committed entry in log order; it must not fail
 * (encode a refusal in the state instead). snapshot returns the whole
 * state as one malloc'd buffer (*len bytes; the bridge frees it) or NULL
 * when out of memory; restore replaces the state with one (PM_OK, or an
 * error that stops raft from using the snapshot).
 */
struct pm_raft_fsm {
    void (*apply)(void *arg, const void *data, size_t len);
    void *(*snapshot)(void *arg, size_t *len);
    int (*restore)(void *arg, const void *data, size_t len);
    void *arg;
};

struct pm_raft_opts {
    uint64_t id;                 /* > 0, unique forever for this data dir */
    const char *address;         /* advertised "host:port" */
    const char *bind;            /* "host:port" to listen on; NULL = address */
    const char *dir;             /* data directory (created if missing) */
    unsigned election_ms;        /* election timeout (0: 1000) */
    unsigned heartbeat_ms;       /* heartbeat and io tick (0: 100) */
    unsigned snapshot_threshold; /* entries between snapshots (0: 1024) */
    unsigned snapshot_trailing;  /* entries kept after one (0: 8192) */
    struct pm_raft_fsm fsm;
    /* Optional: the state or the known leader changed (checked after
     * every pass of the raft loop). leader_id is 0 when none is known. */
    void (*on_change)(void *arg, enum pm_raft_state state, uint64_t leader_id);
    void *arg;
};

/* Result of a request: PM_OK, or why it failed. */
typedef void (*pm_raft_done_fn)(void *arg, int status);

/*
 * Create the node (raft_init on the data dir; nothing listens yet).
 * NULL with a one-line reason in err.
 */
struct pm_raft *pm_raft_new(struct event_base *base,
                            const struct pm_raft_opts *opts, char *err,
                            size_t errlen);
/*
 * Before pm_raft_start: write the first configuration (a brand-new
 * cluster). PM_OK, PM_ECONFLICT when the data dir already holds state
 * (not an error for a restarting node), or PM_EIO with the reason.
 */
int pm_raft_bootstrap(struct pm_raft *r, const struct pm_raft_server *servers,
                      size_t n, char *err, size_t errlen);
/* Load the data dir, listen and take part. PM_OK or PM_EIO + reason. */
int pm_raft_start(struct pm_raft *r, char *err, size_t errlen);

/*
 * Leader only; all asynchronous. done (may be NULL) gets PM_OK once the
 * entry (or configuration change) is committed and applied locally;
 * PM_EUNAVAIL when this node is not the leader (or a transfer is under
 * way) or lost leadership before the commit (the outcome is then
 * unknown: make entries idempotent); PM_ECONFLICT when another
 * membership change is still in progress; PM_ENOTFOUND for an unknown
 * server id; PM_ECLOSED when the node is closing. A request refused at
 * once still reports through done, after the caller returns.
 */
void pm_raft_apply(struct pm_raft *r, const void *data, size_t len,
                   pm_raft_done_fn done, void *arg);
void pm_raft_add(struct pm_raft *r, uint64_t id, const char *address,
                 pm_raft_done_fn done, void *arg);
void pm_raft_assign(struct pm_raft *r, uint64_t id, enum pm_raft_role role,
                    pm_raft_done_fn done, void *arg);
void pm_raft_remove(struct pm_raft *r, uint64_t id, pm_raft_done_fn done,
                    void *arg);
/* Hand leadership to id (0: the most caught-up voter); done gets PM_OK
 * when another node leads afterwards. */
void pm_raft_transfer(struct pm_raft *r, uint64_t id, pm_raft_done_fn done,
                      void *arg);

/*
 * The framing of every entry and snapshot in the raft log (the bytes
 * raft_uv stores and sends to peers): a header of the payload length
 * (u32 little endian) and a zero u32, then the payload, zero padded to a
 * multiple of 8 bytes. Pure functions, any thread.
 *
 * pm_raft_framed_len: the framed size of a payload of len bytes
 * (len <= UINT32_MAX). pm_raft_frame_into writes exactly that many bytes
 * to out. pm_raft_unframe: true, with *data (pointing into buf, after the
 * header) and *len, when buf[0..buflen) is a framed buffer: at least the
 * header, the zero word zero, and the length within buflen - 8; padding
 * and any bytes after it are not checked. false (nothing written) for
 * anything else; the entry is then skipped, the snapshot refused.
 */
size_t pm_raft_framed_len(size_t len);
void pm_raft_frame_into(void *out, const void *data, size_t len);
bool pm_raft_unframe(const void *buf, size_t buflen, const void **data,
                     size_t *len);

enum pm_raft_state pm_raft_state(const struct pm_raft *r);
const char *pm_raft_state_name(enum pm_raft_state s);
/* The leader's id (0 when unknown) and, if addr is not NULL, its address
 * (borrowed until the next raft event; "" when unknown). */
uint64_t pm_raft_leader(const struct pm_raft *r, const char **addr);
uint64_t pm_raft_id(const struct pm_raft *r);
/* The current configuration: up to max members into out; returns the
 * number of members (which may exceed max). */
size_t pm_raft_servers(const struct pm_raft *r, struct pm_raft_server *out,
                       size_t max);
/* Index of the last entry applied to the FSM. */
uint64_t pm_raft_applied(const struct pm_raft *r);

/*
 * Stop taking part and free r: pending requests complete with
 * PM_ECLOSED, the data dir is left consistent, and done (may be NULL)
 * runs once everything is released. Not from inside a pm_raft callback
 * (defer it).
 */
void pm_raft_close(struct pm_raft *r, void (*done)(void *arg), void *arg);

#endif
