/*
 * signaling_mbstore: the storage of the mailbox dialect behind one small
 * interface, so signaling_mailbox.c writes each flow once. A flow step
 * is a batch of commands on keys with TTLs, run in order (one Redis
 * pipeline); its callback gets one result per command. Two backends:
 *  - memory (embedded mode, sig_cluster_redis() == NULL): a hash of
 *    keys with deadlines, expired on access and by a sweep timer; the
 *    callback runs before mbs_run returns;
 *  - Redis (cluster mode): each command becomes one to four Redis
 *    commands on the cluster's command connection; the callback runs
 *    when the last reply arrives (or at once if Redis is down).
 * Loop thread only.
 */
#ifndef SIGNALING_MBSTORE_H
#define SIGNALING_MBSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sig;
struct mbs;

#define MBS_MAX_BATCH 8 /* commands in one batch */

enum mbs_op {
    MBS_GET,    /* the string at key (nil if none) */
    MBS_SET,    /* key = val, living ttl_ms */
    MBS_SET_XX, /* the same only if key exists (nil if it did not) */
    MBS_GETDEL, /* the string at key (nil if none), key deleted at once */
    MBS_DEL,    /* delete key */
    MBS_EXPIRE, /* key (if any) now lives ttl_ms */
    MBS_INCR,   /* num = the counter at key plus one; it lives ttl_ms */
    MBS_PUSH,   /* append val to the list at key, keep its newest max
                   items; it lives ttl_ms; num = its length */
    MBS_RANGE,  /* items = the whole list at key */
    MBS_TAKE,   /* items = the oldest max of the list at key, removed */
    MBS_LIVE    /* member val of the set at key lives ttl_ms, the set
                   too; num = its members still alive */
};

struct mbs_cmd {
    enum mbs_op op;
    const char *key;
    const char *val; /* SET, SET_XX, PUSH, LIVE: NUL-ended (copied) */
    uint64_t ttl_ms;
    size_t max; /* PUSH, TAKE */
};

struct mbs_res {
    bool nil;
    char *str; /* GET, GETDEL: NUL-ended copy */
    long long num;
    char **items; /* RANGE, TAKE: NUL-ended copies */
    size_t *lens;
    size_t n;
};

/*
 * err is PM_OK with res[i] for cmds[i] (valid during the call), or
 * PM_EUNAVAIL (Redis down or the link lost) or PM_EIO (an error reply,
 * errtext its text) with res NULL.
 */
typedef void (*mbs_done_fn)(void *arg, int err, const char *errtext,
                            const struct mbs_res *res);

struct mbs *mbs_new(struct sig *s);
/* Drops batches still waiting for Redis (their callbacks never run). */
void mbs_free(struct mbs *st);
/* The key for (kind, id): "{prefix}:{kind}:{id}" in Redis (malloc'd). */
char *mbs_key(struct mbs *st, const char *kind, const char *id);
/* Run n commands (at most MBS_MAX_BATCH); done may be NULL. */
void mbs_run(struct mbs *st, const struct mbs_cmd *cmds, size_t n,
             mbs_done_fn done, void *arg);

#endif
