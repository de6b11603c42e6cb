/*
 * Unit tests of pm_raft: real raft_uv over loopback TCP, every node in
 * this process on one event_base, data dirs under a mkdtemp'd directory
 * removed at the end. Covers a single node (election, framing of odd
 * lengths, refusals through done), three nodes (one leader, replication
 * in order, idle CPU), membership changes, leadership transfer, snapshot
 * install on a new node, restart from the data dir, and the loss of the
 * leader. Every wait is bounded and fails the test on its deadline.
 * PM_RAFT_TEST_LOG=1 logs every state change (with LIBRAFT_TRACE=1, raft's
 * own trace too).
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "pm_log.h"
#include "pm_raft.h"
#include "pm_test.h"
#include "pm_util.h"

#define MAXN 5
#define ELECTION_MS 200
#define HEARTBEAT_MS 40

/* Wait (running the loop) until expr holds; fail after ms. */
#define WAIT_UNTIL(expr, ms)                                                   \
    do {                                                                       \
        uint64_t deadline_ = pm_now_ms() + (ms);                               \
        while (!(expr)) {                                                      \
            ck_assert_msg(pm_now_ms() < deadline_, "timed out: %s", #expr);    \
            event_base_loop(base, EVLOOP_ONCE);                                \
        }                                                                      \
    } while (0)

struct entry {
    size_t len;
    unsigned char *data;
};

struct node {
    uint64_t id;
    char addr[32];
    char dir[PATH_MAX];
    struct pm_raft *r;
    bool voter; /* expected to agree on the leader */
    /* the FSM: every entry applied, in order */
    struct entry *entries;
    size_t n, cap;
    int restores;
    /* on_change */
    enum pm_raft_state state;
    uint64_t leader;
    int changes, candidates;
};

struct tally {
    int ok, failed, last_err;
};

static char topdir[256]; /* per test case, removed at the end */
static char dir[512];    /* per test */
static struct event_base *base;
static struct event *tick;
static struct node nodes[MAXN];
static unsigned snap_threshold, snap_trailing;

/* --- the test FSM --- */

static void
fsm_reset(struct node *n)
{
    size_t i;

    for (i = 0; i < n->n; i++)
        free(n->entries[i].data);
    free(n->entries);
    n->entries = NULL;
    n->n = n->cap = 0;
}

static void
fsm_push(struct node *n, const void *data, size_t len)
{
    if (n->n == n->cap) {
        n->cap = n->cap ? 2 * n->cap : 64;
        n->entries = pm_xrealloc(n->entries, n->cap * sizeof(*n->entries));
    }
    n->entries[n->n].len = len;
    n->entries[n->n].data = pm_xmalloc(len);
    memcpy(n->entries[n->n].data, data, len);
    n->n++;
}

static void
fsm_apply(void *arg, const void *data, size_t len)
{
    fsm_push(arg, data, len);
}

/* The snapshot: (u32 length, bytes) per entry. */
static void *
fsm_snapshot(void *arg, size_t *len)
{
    struct node *n = arg;
    unsigned char *buf, *p;
    size_t i, total = 0;
    uint32_t l;

    for (i = 0; i < n->n; i++)
        total += 4 + n->entries[i].len;
    p = buf = pm_xmalloc(total);
    for (i = 0; i < n->n; i++) {
        l = (uint32_t)n->entries[i].len;
        memcpy(p, &l, 4);
        memcpy(p + 4, n->entries[i].data, l);
        p += 4 + l;
    }
    *len = total;
    return buf;
}

static int
fsm_restore(void *arg, const void *data, size_t len)
{
    struct node *n = arg;
    const unsigned char *p = data, *end = p + len;
    uint32_t l;

    fsm_reset(n);
    while (p < end) {
        if (end - p < 4)
            return PM_EPROTO;
        memcpy(&l, p, 4);
        if ((size_t)(end - p - 4) < l)
            return PM_EPROTO;
        fsm_push(n, p + 4, l);
        p += 4 + l;
    }
    n->restores++;
    return PM_OK;
}

/* Entry i: 1..100 bytes of a pattern that depends on i. */
static size_t
make_entry(unsigned i, unsigned char *buf)
{
    size_t j, len = i % 100 + 1;

    for (j = 0; j < len; j++)
        buf[j] = (unsigned char)(i * 131 + j * 7 + 1);
    return len;
}

/*
 * Does node k's FSM hold exactly entries 0..count-1, with, when extra is
 * not NULL, that one byte as an entry after the first `at` of them (an
 * entry whose outcome was left unknown)?
 */
static bool
fsm_has_with(int k, unsigned count, unsigned at, const unsigned char *extra)
{
    struct node *n = &nodes[k];
    const struct entry *e = n->entries;
    unsigned char want[100];
    unsigned i;

    if (extra != NULL && n->n == count + 1) {
        if (e[at].len != 1 || e[at].data[0] != *extra)
            return false;
    } else if (n->n != count) {
        return false;
    }
    for (i = 0; i < count; i++, e++) {
        size_t len = make_entry(i, want);

        if (extra != NULL && n->n == count + 1 && i == at)
            e++;
        if (e->len != len || memcmp(e->data, want, len) != 0)
            return false;
    }
    return true;
}

static bool
fsm_has(int k, unsigned count)
{
    return fsm_has_with(k, count, 0, NULL);
}

/* Has node k written a snapshot to its data dir? */
static bool
has_snapshot_file(int k)
{
    DIR *d = opendir(nodes[k].dir);
    struct dirent *de;
    bool found = false;

    ck_assert_ptr_nonnull(d);
    while (!found && (de = readdir(d)) != NULL)
        found = strncmp(de->d_name, "snapshot-", 9) == 0 &&
                strstr(de->d_name, ".meta") != NULL;
    closedir(d);
    return found;
}

/* --- callbacks --- */

static void
on_change(void *arg, enum pm_raft_state state, uint64_t leader)
{
    struct node *n = arg;

    n->state = state;
    n->leader = leader;
    n->changes++;
    if (state == PM_RAFT_CANDIDATE)
        n->candidates++;
}

static void
tally_done(void *arg, int status)
{
    struct tally *t = arg;

    if (status == PM_OK) {
        t->ok++;
    } else {
        t->failed++;
        t->last_err = status;
    }
}

static void
node_closed(void *arg)
{
    struct node *n = arg;

    n->r = NULL;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* --- nodes --- */

static int
free_port(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Give node k an id, a port and a data dir. */
static void
node_init(int k)
{
    struct node *n = &nodes[k];

    n->id = (uint64_t)k + 1;
    snprintf(n->addr, sizeof(n->addr), "127.0.0.1:%d", free_port());
    snprintf(n->dir, sizeof(n->dir), "%s/node%d/data", dir, k + 1);
}

/* Create node k's pm_raft on its data dir (with a fresh FSM). */
static void
node_open(int k)
{
    struct node *n = &nodes[k];
    struct pm_raft_opts o;
    char err[PM_ERRMSG_SIZE] = "";

    fsm_reset(n);
    n->state = PM_RAFT_UNAVAILABLE;
    n->leader = 0;
    n->changes = n->candidates = 0;
    memset(&o, 0, sizeof(o));
    o.id = n->id;
    o.address = n->addr;
    o.bind = k == 0 ? n->addr : NULL;
    o.dir = n->dir;
    o.election_ms = ELECTION_MS;
    /* Different ticks per node: in one process equal ticks fall into step
     * (a busy pass delays and merges them), and followers ticking in step
     * time out in the same pass and split the vote. */
    o.heartbeat_ms = HEARTBEAT_MS + 7 * (unsigned)k;
    o.snapshot_threshold = snap_threshold;
    o.snapshot_trailing = snap_trailing;
    o.fsm.apply = fsm_apply;
    o.fsm.snapshot = fsm_snapshot;
    o.fsm.restore = fsm_restore;
    o.fsm.arg = n;
    o.on_change = on_change;
    o.arg = n;
    n->r = pm_raft_new(base, &o, err, sizeof(err));
    ck_assert_msg(n->r != NULL, "pm_raft_new: %s", err);
    ck_assert_uint_eq(pm_raft_id(n->r), n->id);
}

/* Write the first configuration: nodes 0..count-1, all voters. */
static int
node_bootstrap(int k, int count)
{
    struct pm_raft_server s[MAXN];
    char err[PM_ERRMSG_SIZE] = "";
    int i, rc;

    for (i = 0; i < count; i++) {
        s[i].id = nodes[i].id;
        pm_strlcpy(s[i].address, nodes[i].addr, sizeof(s[i].address));
        s[i].role = PM_RAFT_VOTER;
    }
    rc = pm_raft_bootstrap(nodes[k].r, s, (size_t)count, err, sizeof(err));
    ck_assert_msg(rc == PM_OK || rc == PM_ECONFLICT, "bootstrap: %s", err);
    return rc;
}

static void
node_start(int k)
{
    char err[PM_ERRMSG_SIZE] = "";

    ck_assert_msg(pm_raft_start(nodes[k].r, err, sizeof(err)) == PM_OK,
                  "start: %s", err);
}

static void
node_close(int k)
{
    nodes[k].voter = false;
    pm_raft_close(nodes[k].r, node_closed, &nodes[k]);
    WAIT_UNTIL(nodes[k].r == NULL, 5000);
}

/* The node every voter agrees leads (and it says so itself), or -1. */
static int
agreed_leader(void)
{
    int k, leader = -1;

    for (k = 0; k < MAXN; k++) {
        if (!nodes[k].voter || pm_raft_state(nodes[k].r) != PM_RAFT_LEADER)
            continue;
        if (leader >= 0)
            return -1;
        leader = k;
    }
    if (leader < 0)
        return -1;
    for (k = 0; k < MAXN; k++)
        if (nodes[k].voter &&
            pm_raft_leader(nodes[k].r, NULL) != nodes[leader].id)
            return -1;
    return leader;
}

/* Bootstrap and start nodes 0..count-1; returns the leader. */
static int
cluster_up(int count)
{
    int k, leader;

    for (k = 0; k < count; k++)
        node_init(k);
    for (k = 0; k < count; k++) {
        node_open(k);
        ck_assert_int_eq(node_bootstrap(k, count), PM_OK);
        nodes[k].voter = true;
    }
    for (k = 0; k < count; k++)
        node_start(k);
    WAIT_UNTIL((leader = agreed_leader()) >= 0, 10 * ELECTION_MS);
    return leader;
}

/* Apply entries first..first+count-1 on node k and wait for them all. */
static void
apply_entries(int k, unsigned first, unsigned count)
{
    unsigned char buf[100];
    struct tally t = {0, 0, 0};
    unsigned i;

    for (i = first; i < first + count; i++)
        pm_raft_apply(nodes[k].r, buf, make_entry(i, buf), tally_done, &t);
    WAIT_UNTIL(t.ok + t.failed == (int)count, 10000);
    ck_assert_msg(t.failed == 0, "%d applies failed (last %d)", t.failed,
                  t.last_err);
}

/* Is server id listed in node k's configuration with this role? */
static bool
has_server(int k, uint64_t id, enum pm_raft_role role)
{
    struct pm_raft_server s[MAXN + 1];
    size_t i, n = pm_raft_servers(nodes[k].r, s, MAXN + 1);

    for (i = 0; i < n && i < MAXN + 1; i++)
        if (s[i].id == id)
            return s[i].role == role;
    return false;
}

static size_t
server_count(int k)
{
    struct pm_raft_server s[MAXN + 1];

    return pm_raft_servers(nodes[k].r, s, MAXN + 1);
}

static uint64_t
cpu_ms(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* --- fixtures --- */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
suite_setup(void)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(topdir, sizeof(topdir), "%s/test_raft.XXXXXX",
             tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(topdir));
}

static void
suite_teardown(void)
{
    nftw(topdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
setup(void)
{
    static const struct timeval every = {0, 20000};

    pm_log_setup("test", getenv("PM_RAFT_TEST_LOG") ? PM_LOG_INFO : PM_LOG_WARN,
                 false);
    signal(SIGPIPE, SIG_IGN); /* as p2pmesh does: libuv writes to peers */
    snprintf(dir, sizeof(dir), "%s/t.XXXXXX", topdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    base = event_base_new();
    /* Bounds every EVLOOP_ONCE iteration of WAIT_UNTIL. */
    tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    event_add(tick, &every);
    memset(nodes, 0, sizeof(nodes));
    snap_threshold = snap_trailing = 0;
}

static void
teardown(void)
{
    int k;

    for (k = 0; k < MAXN; k++)
        if (nodes[k].r != NULL)
            pm_raft_close(nodes[k].r, node_closed, &nodes[k]);
    for (k = 0; k < MAXN; k++) {
        WAIT_UNTIL(nodes[k].r == NULL, 5000);
        fsm_reset(&nodes[k]);
    }
    event_free(tick);
    event_base_free(base);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- tests --- */

START_TEST(rejects_bad_options_and_closes_unstarted)
{
    struct pm_raft_opts o;
    char err[PM_ERRMSG_SIZE] = "";
    struct tally t = {0, 0, 0};

    memset(&o, 0, sizeof(o));
    o.address = "127.0.0.1:1";
    o.dir = dir;
    o.fsm.apply = fsm_apply;
    o.fsm.snapshot = fsm_snapshot;
    o.fsm.restore = fsm_restore;
    ck_assert_ptr_null(pm_raft_new(base, &o, err, sizeof(err)));
    ck_assert_str_ne(err, "");
    o.id = 1;
    o.election_ms = 100;
    o.heartbeat_ms = 100;
    err[0] = '\0';
    ck_assert_ptr_null(pm_raft_new(base, &o, err, sizeof(err)));
    ck_assert_str_ne(err, "");
    o.election_ms = 0;
    o.heartbeat_ms = 0;
    o.bind = "not an address";
    err[0] = '\0';
    ck_assert_ptr_null(pm_raft_new(base, &o, err, sizeof(err)));
    ck_assert_str_ne(err, "");

    /* A node never started closes too; a request refused just before
     * still reports, before the close's done. */
    node_init(0);
    node_open(0);
    pm_raft_apply(nodes[0].r, "x", 1, tally_done, &t);
    node_close(0);
    ck_assert_int_eq(t.failed, 1);
    ck_assert_int_eq(t.last_err, PM_EUNAVAIL);
}
END_TEST

START_TEST(single_node_applies_odd_lengths_in_order)
{
    struct tally early = {0, 0, 0};
    unsigned char byte = 7;
    uint64_t t0;

    node_init(0);
    node_open(0);
    /* Not started: refused, but only after the caller returns. */
    pm_raft_apply(nodes[0].r, &byte, 1, tally_done, &early);
    ck_assert_int_eq(early.failed, 0);
    WAIT_UNTIL(early.failed == 1, 1000);
    ck_assert_int_eq(early.last_err, PM_EUNAVAIL);
    ck_assert_int_eq(pm_raft_state(nodes[0].r), PM_RAFT_UNAVAILABLE);

    ck_assert_int_eq(node_bootstrap(0, 1), PM_OK);
    nodes[0].voter = true;
    t0 = pm_now_ms();
    node_start(0);
    WAIT_UNTIL(nodes[0].state == PM_RAFT_LEADER, 2000);
    fprintf(stderr, "single node elected in %llu ms\n",
            (unsigned long long)(pm_now_ms() - t0));
    ck_assert_uint_eq(nodes[0].leader, 1);
    ck_assert_uint_eq(pm_raft_leader(nodes[0].r, NULL), 1);
    ck_assert_int_eq(nodes[0].candidates, 0);

    t0 = pm_now_ms();
    apply_entries(0, 0, 100);
    fprintf(stderr, "100 pipelined applies in %llu ms\n",
            (unsigned long long)(pm_now_ms() - t0));
    ck_assert(fsm_has(0, 100));
    ck_assert_uint_ge(pm_raft_applied(nodes[0].r), 100);

    /* Sequential: each apply waits for the previous one. */
    t0 = pm_now_ms();
    apply_entries(0, 100, 1);
    apply_entries(0, 101, 1);
    apply_entries(0, 102, 1);
    fprintf(stderr, "sequential apply %llu ms each\n",
            (unsigned long long)(pm_now_ms() - t0) / 3);
    ck_assert(fsm_has(0, 103));
}
END_TEST

START_TEST(three_nodes_elect_one_leader_and_replicate)
{
    struct tally t = {0, 0, 0};
    unsigned char byte = 1;
    uint64_t t0 = pm_now_ms(), c0;
    int leader, k, follower;

    leader = cluster_up(3);
    fprintf(stderr, "three nodes elected in %llu ms\n",
            (unsigned long long)(pm_now_ms() - t0));
    for (k = 0; k < 3; k++)
        if (k != leader)
            ck_assert_int_eq(pm_raft_state(nodes[k].r), PM_RAFT_FOLLOWER);

    apply_entries(leader, 0, 200);
    WAIT_UNTIL(fsm_has(0, 200) && fsm_has(1, 200) && fsm_has(2, 200), 5000);

    /* A follower refuses, through done, after the call returns. */
    follower = (leader + 1) % 3;
    pm_raft_apply(nodes[follower].r, &byte, 1, tally_done, &t);
    ck_assert_int_eq(t.ok + t.failed, 0);
    WAIT_UNTIL(t.failed == 1, 1000);
    ck_assert_int_eq(t.last_err, PM_EUNAVAIL);

    /* Idle: the loop sleeps between raft's heartbeat ticks. */
    c0 = cpu_ms();
    t0 = pm_now_ms();
    WAIT_UNTIL(pm_now_ms() - t0 >= 1000, 2000);
    fprintf(stderr, "idle 3-node cluster: %llu ms CPU in 1 s\n",
            (unsigned long long)(cpu_ms() - c0));
    ck_assert_uint_lt(cpu_ms() - c0, 200);
    ck_assert_int_eq(agreed_leader(), leader);
    for (k = 0; k < 3; k++)
        ck_assert(fsm_has(k, 200));
}
END_TEST

START_TEST(membership_add_assign_remove)
{
    struct tally add = {0, 0, 0}, clash = {0, 0, 0}, assign = {0, 0, 0},
                 rm = {0, 0, 0};
    int leader = cluster_up(3);

    apply_entries(leader, 0, 20);
    node_init(3);
    node_init(4);
    node_open(3);
    node_start(3);
    /* Not in any configuration: a follower that knows no leader. */
    WAIT_UNTIL(nodes[3].state == PM_RAFT_FOLLOWER, 1000);
    ck_assert_uint_eq(pm_raft_leader(nodes[3].r, NULL), 0);
    ck_assert_uint_eq(server_count(3), 0);

    pm_raft_add(nodes[leader].r, nodes[3].id, nodes[3].addr, tally_done, &add);
    /* Another change while that one is pending: refused. */
    pm_raft_add(nodes[leader].r, nodes[4].id, nodes[4].addr, tally_done,
                &clash);
    WAIT_UNTIL(add.ok + add.failed == 1 && clash.failed == 1, 3000);
    ck_assert_int_eq(add.ok, 1);
    ck_assert_int_eq(clash.last_err, PM_ECONFLICT);
    ck_assert(has_server(leader, nodes[3].id, PM_RAFT_SPARE));

    pm_raft_assign(nodes[leader].r, nodes[3].id, PM_RAFT_VOTER, tally_done,
                   &assign);
    WAIT_UNTIL(assign.ok + assign.failed == 1, 5000);
    ck_assert_int_eq(assign.ok, 1);
    ck_assert(has_server(leader, nodes[3].id, PM_RAFT_VOTER));
    nodes[3].voter = true;
    WAIT_UNTIL(fsm_has(3, 20) && agreed_leader() == leader, 3000);
    WAIT_UNTIL(has_server(3, nodes[3].id, PM_RAFT_VOTER), 3000);
    ck_assert_uint_eq(server_count(leader), 4);
    apply_entries(leader, 20, 5);
    WAIT_UNTIL(fsm_has(3, 25), 3000);

    pm_raft_remove(nodes[leader].r, nodes[3].id, tally_done, &rm);
    WAIT_UNTIL(rm.ok + rm.failed == 1, 3000);
    ck_assert_int_eq(rm.ok, 1);
    ck_assert_uint_eq(server_count(leader), 3);
    ck_assert(!has_server(leader, nodes[3].id, PM_RAFT_VOTER));
    nodes[3].voter = false;

    /* Unknown ids. */
    rm.ok = rm.failed = 0;
    pm_raft_remove(nodes[leader].r, 99, tally_done, &rm);
    WAIT_UNTIL(rm.failed == 1, 1000);
    ck_assert_int_eq(rm.last_err, PM_ENOTFOUND);
    apply_entries(leader, 25, 5);
    ck_assert(fsm_has(leader, 30));
}
END_TEST

START_TEST(transfer_moves_leadership_without_an_election_timeout)
{
    struct tally t = {0, 0, 0};
    int old = cluster_up(3), now, k;
    uint64_t t0;

    apply_entries(old, 0, 10);
    WAIT_UNTIL(fsm_has(0, 10) && fsm_has(1, 10) && fsm_has(2, 10), 3000);
    for (k = 0; k < 3; k++)
        nodes[k].changes = nodes[k].candidates = 0;

    t0 = pm_now_ms();
    pm_raft_transfer(nodes[old].r, 0, tally_done, &t);
    WAIT_UNTIL(t.ok + t.failed == 1, 3 * ELECTION_MS);
    ck_assert_int_eq(t.ok, 1);
    WAIT_UNTIL((now = agreed_leader()) >= 0, 2000);
    fprintf(stderr, "transfer done in %llu ms (target candidate reports %d)\n",
            (unsigned long long)(pm_now_ms() - t0), nodes[now].candidates);
    ck_assert_int_ne(now, old);
    ck_assert_uint_lt(pm_now_ms() - t0, ELECTION_MS);
    for (k = 0; k < 3; k++) {
        WAIT_UNTIL(nodes[k].leader == nodes[now].id, 1000);
        ck_assert_int_gt(nodes[k].changes, 0);
        /* Only the target campaigns (at once, on TimeoutNow). */
        if (k != now)
            ck_assert_int_eq(nodes[k].candidates, 0);
    }
    ck_assert_int_eq(nodes[now].state, PM_RAFT_LEADER);
    ck_assert_int_eq(nodes[old].state, PM_RAFT_FOLLOWER);

    /* The new leader takes entries; a transfer to oneself is refused. */
    apply_entries(now, 10, 5);
    WAIT_UNTIL(fsm_has(0, 15) && fsm_has(1, 15) && fsm_has(2, 15), 3000);
    t.ok = t.failed = 0;
    pm_raft_transfer(nodes[now].r, nodes[now].id, tally_done, &t);
    WAIT_UNTIL(t.failed == 1, 1000);
    ck_assert_int_eq(t.last_err, PM_ENOTFOUND);
}
END_TEST

START_TEST(new_node_gets_the_state_by_snapshot)
{
    struct tally add = {0, 0, 0}, assign = {0, 0, 0};
    int leader, k;

    snap_threshold = 16;
    snap_trailing = 8;
    leader = cluster_up(3);
    apply_entries(leader, 0, 100);
    WAIT_UNTIL(fsm_has(0, 100) && fsm_has(1, 100) && fsm_has(2, 100), 3000);
    for (k = 0; k < 3; k++)
        ck_assert_int_eq(nodes[k].restores, 0);

    node_init(3);
    node_open(3);
    node_start(3);
    pm_raft_add(nodes[leader].r, nodes[3].id, nodes[3].addr, tally_done, &add);
    WAIT_UNTIL(add.ok + add.failed == 1, 3000);
    ck_assert_int_eq(add.ok, 1);
    pm_raft_assign(nodes[leader].r, nodes[3].id, PM_RAFT_VOTER, tally_done,
                   &assign);
    WAIT_UNTIL(assign.ok + assign.failed == 1, 5000);
    ck_assert_int_eq(assign.ok, 1);
    WAIT_UNTIL(fsm_has(3, 100), 3000);
    ck_assert_int_ge(nodes[3].restores, 1);

    /* And entries after the snapshot follow it. */
    apply_entries(leader, 100, 10);
    WAIT_UNTIL(fsm_has(3, 110), 3000);
}
END_TEST

START_TEST(restart_rebuilds_the_state_from_the_data_dir)
{
    int leader, f;

    snap_threshold = 16;
    snap_trailing = 8;
    leader = cluster_up(3);
    apply_entries(leader, 0, 50);
    f = (leader + 1) % 3;
    WAIT_UNTIL(fsm_has(f, 50), 3000);
    /* Close once its snapshot is on disk (raft_uv's snapshot-* files), so
     * the restart loads a snapshot and replays the log after it. */
    WAIT_UNTIL(has_snapshot_file(f), 3000);
    node_close(f);

    /* The other two still commit. */
    apply_entries(leader, 50, 10);

    node_open(f);
    ck_assert_int_eq(nodes[f].n, 0);
    ck_assert_int_eq(node_bootstrap(f, 3), PM_ECONFLICT);
    node_start(f);
    ck_assert_int_ge(nodes[f].restores, 1); /* its own snapshot, at start */
    nodes[f].voter = true;
    WAIT_UNTIL(fsm_has(f, 60), 5000);
    WAIT_UNTIL(agreed_leader() == leader, 3000);
    apply_entries(leader, 60, 5);
    WAIT_UNTIL(fsm_has(0, 65) && fsm_has(1, 65) && fsm_has(2, 65), 3000);
}
END_TEST

START_TEST(losing_the_leader_elects_another)
{
    struct tally t = {0, 0, 0}, add = {0, 0, 0};
    unsigned char byte = 9;
    int old = cluster_up(3), now;
    uint64_t t0;

    apply_entries(old, 0, 10);
    /* Pending on the leader when it closes: PM_ECLOSED. */
    pm_raft_apply(nodes[old].r, &byte, 1, tally_done, &t);
    pm_raft_add(nodes[old].r, 9, "127.0.0.1:9", tally_done, &add);
    t0 = pm_now_ms();
    node_close(old);
    ck_assert_int_eq(t.failed, 1);
    ck_assert_int_eq(t.last_err, PM_ECLOSED);
    ck_assert_int_eq(add.failed, 1);
    ck_assert_int_eq(add.last_err, PM_ECLOSED);

    /* Typically under two election timeouts: the first follower to time
     * out is refused while the other still has a leader, the second then
     * wins at once. If both time out in the same pass they grant each
     * other's pre-vote and split the vote, which costs one more
     * randomized timeout (1 to 2 of them). */
    WAIT_UNTIL((now = agreed_leader()) >= 0, 5 * ELECTION_MS);
    fprintf(stderr, "new leader after %llu ms\n",
            (unsigned long long)(pm_now_ms() - t0));
    ck_assert_int_ne(now, old);
    /* The closed leader's entry may or may not have been committed. */
    apply_entries(now, 10, 5);
    WAIT_UNTIL(fsm_has_with((old + 1) % 3, 15, 10, &byte) &&
                   fsm_has_with((old + 2) % 3, 15, 10, &byte) &&
                   nodes[(old + 1) % 3].n == nodes[(old + 2) % 3].n,
               3000);
}
END_TEST

static Suite *
raft_suite(void)
{
    Suite *s = suite_create("pm_raft");
    TCase *tc = tcase_create("raft");

    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rejects_bad_options_and_closes_unstarted);
    tcase_add_test(tc, single_node_applies_odd_lengths_in_order);
    tcase_add_test(tc, three_nodes_elect_one_leader_and_replicate);
    tcase_add_test(tc, membership_add_assign_remove);
    tcase_add_test(tc, transfer_moves_leadership_without_an_election_timeout);
    tcase_add_test(tc, new_node_gets_the_state_by_snapshot);
    tcase_add_test(tc, restart_rebuilds_the_state_from_the_data_dir);
    tcase_add_test(tc, losing_the_leader_elects_another);
    suite_add_tcase(s, tc);
    return s;
}

PM_TEST_MAIN(raft_suite)
