/*
 * Unit tests of the signaling role's socket-free parts: nearest-peer
 * selection by XOR distance, realm bookkeeping, the undeliverable texts,
 * and the bounds of the offline mailbox.
 */
#include "config.h"

#include "pm_test.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "pm_util.h"
#include "signaling.h"

static int64_t peers_gauge;
static uint64_t joins, relayed, queued, expired, undeliverable;
static struct sig_conf conf = {
    .bootstrap_count = 5,
    .announce_max = 64,
    .mailbox_max = 2,
    .mailbox_ttl = 30000,
    .heartbeat_interval = 30000,
    .max_peers_per_realm = 10000,
};

static void
sig_setup(struct sig *s, struct event_base *base)
{
    memset(s, 0, sizeof *s);
    s->conf = &conf;
    s->stats.peers = &peers_gauge;
    s->stats.joins = &joins;
    s->stats.relayed_mesh = &relayed;
    s->stats.queued = &queued;
    s->stats.expired = &expired;
    s->stats.undeliverable = &undeliverable;
    TAILQ_INIT(&s->by_expiry);
    if (base != NULL)
        s->expiry_timer = evtimer_new(base, NULL, NULL);
}

/* Unregister and free every client of r, then release r. */
static void
drop_realm(struct sig *s, struct sig_realm *r)
{
    struct sig_client *c, *tmp;

    HASH_ITER(hh, r->peers, c, tmp)
    {
        sig_realm_remove(s, c);
        r->nclients--;
        free(c);
    }
    sig_realm_release(s, r);
    ck_assert_ptr_null(s->realms);
}

static struct sig_client *
join(struct sig *s, struct sig_realm *r, const char *id)
{
    struct sig_client *c = pm_xcalloc(1, sizeof *c);

    c->realm = r;
    r->nclients++;
    sig_realm_add(s, c, id);
    return c;
}

START_TEST(nearest_by_xor_distance)
{
    struct sig s;
    struct sig_realm *r;
    struct sig_client *out[5], *me;
    size_t n;

    sig_setup(&s, NULL);
    r = sig_realm_get(&s, SIG_REALM_MESH, "");
    /* distances from 0x10: 0x11->1, 0x12->2, 0x00->0x10, 0xf0->0xe0 */
    join(&s, r, "f0");
    join(&s, r, "12");
    join(&s, r, "00");
    join(&s, r, "11");
    me = join(&s, r, "10");
    n = sig_realm_nearest(r, "10", me, 3, out);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(out[0]->id, "11");
    ck_assert_str_eq(out[1]->id, "12");
    ck_assert_str_eq(out[2]->id, "00");
    n = sig_realm_nearest(r, "10", me, 5, out);
    ck_assert_uint_eq(n, 4); /* never itself */
    ck_assert_str_eq(out[3]->id, "f0");
    ck_assert_uint_eq(r->npeers, 5);
    ck_assert_int_eq(peers_gauge, 0); /* the gauge counts sockets here */
    drop_realm(&s, r);
}
END_TEST

START_TEST(nearest_mixed_lengths_and_non_hex)
{
    struct sig s;
    struct sig_realm *r;
    struct sig_client *out[4];
    size_t n;

    sig_setup(&s, NULL);
    r = sig_realm_get(&s, SIG_REALM_MESH, "room");
    join(&s, r, "zeta");  /* not hex: after every hex id */
    join(&s, r, "alpha"); /* not hex, sorts before zeta */
    join(&s, r, "0001");  /* 1 ^ 3 = 2 */
    join(&s, r, "2");     /* 2 ^ 3 = 1: shorter ids are zero-padded */
    n = sig_realm_nearest(r, "3", NULL, 4, out);
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(out[0]->id, "2");
    ck_assert_str_eq(out[1]->id, "0001");
    ck_assert_str_eq(out[2]->id, "alpha");
    ck_assert_str_eq(out[3]->id, "zeta");
    /* A non-hex joiner gets plain string order. */
    n = sig_realm_nearest(r, "me", NULL, 2, out);
    ck_assert_str_eq(out[0]->id, "0001");
    ck_assert_str_eq(out[1]->id, "2");
    drop_realm(&s, r);
}
END_TEST

/* Reference ranking for the differential test: brute force. */
struct ref {
    const char *id;
    bool hex;
    uint8_t dist[64];
};

static bool
ref_key(const char *id, uint8_t key[64])
{
    size_t n = strlen(id), i;

    memset(key, 0, 64);
    for (i = 0; i < n; i++) {
        char ch = id[n - 1 - i];
        int v = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;

        if (v < 0)
            return false;
        key[63 - i / 2] |= (uint8_t)(i % 2 ? v << 4 : v);
    }
    return n > 0;
}

static int
ref_cmp(const void *pa, const void *pb)
{
    const struct ref *a = pa, *b = pb;
    int d;

    if (a->hex != b->hex)
        return a->hex ? -1 : 1;
    if (a->hex && (d = memcmp(a->dist, b->dist, 64)) != 0)
        return d;
    return strcmp(a->id, b->id);
}

static void
random_id(char *out, unsigned *seed)
{
    static const char hexd[] = "0123456789abcdef";
    int kind = rand_r(seed) % 10, len, i;

    if (kind == 0) { /* not hex */
        sprintf(out, "peer-%d", rand_r(seed) % 1000);
        return;
    }
    /* mostly 40 hex digits; sometimes short ones, to mix lengths */
    len = kind < 8 ? 40 : 1 + rand_r(seed) % 6;
    for (i = 0; i < len; i++)
        out[i] = hexd[rand_r(seed) % 16];
    out[len] = '\0';
}

START_TEST(nearest_matches_brute_force)
{
    unsigned seed = 12345;
    int round;

    for (round = 0; round < 40; round++) {
        struct sig s;
        struct sig_realm *r;
        struct sig_client *cl[300], *out[70];
        struct ref refs[300];
        char id[64];
        int n = 1 + rand_r(&seed) % 300, i, j, m;
        size_t k = 1 + (size_t)(rand_r(&seed) % 70), got;
        uint8_t me[64];
        bool me_hex;

        sig_setup(&s, NULL);
        r = sig_realm_get(&s, SIG_REALM_MESH, "diff");
        for (i = 0, m = 0; i < n; i++) {
            random_id(id, &seed);
            if (sig_realm_find(r, id) == NULL)
                cl[m++] = join(&s, r, id);
        }
        /* remove a few, so removal keeps the order right */
        for (i = 0; i < m / 5; i++) {
            j = rand_r(&seed) % m;
            if (cl[j]->id != NULL)
                sig_realm_remove(&s, cl[j]);
        }
        for (int q = 0; q < 10; q++) {
            const struct sig_client *self = cl[rand_r(&seed) % m];
            int nref = 0;

            if (q % 3 == 0 || self->id == NULL) {
                random_id(id, &seed); /* a target that is not joined */
                self = NULL;
            } else {
                strcpy(id, self->id);
            }
            me_hex = ref_key(id, me);
            for (i = 0; i < m; i++) {
                uint8_t key[64];

                if (cl[i]->id == NULL || cl[i] == self)
                    continue;
                refs[nref].id = cl[i]->id;
                refs[nref].hex = me_hex && ref_key(cl[i]->id, key);
                for (j = 0; j < 64; j++)
                    refs[nref].dist[j] = key[j] ^ me[j];
                nref++;
            }
            qsort(refs, (size_t)nref, sizeof *refs, ref_cmp);
            got = sig_realm_nearest(r, id, self, k, out);
            ck_assert_uint_eq(got, (size_t)nref < k ? (size_t)nref : k);
            for (i = 0; i < (int)got; i++)
                ck_assert_msg(strcmp(out[i]->id, refs[i].id) == 0,
                              "round %d: rank %d is %s, expected %s", round, i,
                              out[i]->id, refs[i].id);
        }
        for (i = 0; i < m; i++) {
            sig_realm_remove(&s, cl[i]);
            r->nclients--;
            free(cl[i]);
        }
        sig_realm_release(&s, r);
        ck_assert_ptr_null(s.realms);
    }
}
END_TEST

START_TEST(realm_remove_and_release)
{
    struct sig s;
    struct sig_realm *r;
    struct sig_client *a;

    sig_setup(&s, NULL);
    peers_gauge = 0;
    r = sig_realm_get(&s, SIG_REALM_MESH, "x");
    ck_assert_ptr_eq(sig_realm_get(&s, SIG_REALM_MESH, "x"), r);
    a = join(&s, r, "abc");
    ck_assert_ptr_eq(sig_realm_find(r, "abc"), a);
    sig_realm_remove(&s, a);
    ck_assert_ptr_null(a->id);
    ck_assert_ptr_null(sig_realm_find(r, "abc"));
    ck_assert_uint_eq(r->npeers, 0);
    ck_assert_int_eq(peers_gauge, 0);
    sig_realm_remove(&s, a); /* twice is harmless */
    r->nclients--;
    sig_realm_release(&s, r);
    ck_assert_ptr_null(s.realms);
    free(a);
}
END_TEST

START_TEST(not_found_texts)
{
    char t[128];

    sig_not_found_text(t, sizeof t, "p1", "signal");
    ck_assert_str_eq(t, "Peer p1 not found.");
    sig_not_found_text(t, sizeof t, "p1", "batched_signals");
    ck_assert_str_eq(t, "Peer p1 not found for batched signals.");
    sig_not_found_text(t, sizeof t, "p1", "kademlia_rpc_request");
    ck_assert_str_eq(t, "Peer p1 not found for kademlia_rpc_request.");
}
END_TEST

START_TEST(offline_mailbox_is_bounded)
{
    struct event_base *base = event_base_new();
    struct sig s;
    struct sig_realm *r;

    sig_setup(&s, base);
    queued = 0;
    r = sig_realm_get(&s, SIG_REALM_MESH, "");
    r->nclients++; /* a connection keeps the realm alive */
    ck_assert_int_eq(
        sig_offline_hold(&s, r, "away", "me", "signal", "{\"a\":1}", 7, 30000),
        PM_OK);
    ck_assert_int_eq(
        sig_offline_hold(&s, r, "away", "me", "signal", "{\"a\":2}", 7, 30000),
        PM_OK);
    /* mailbox_max is 2 */
    ck_assert_int_eq(
        sig_offline_hold(&s, r, "away", "me", "signal", "{\"a\":3}", 7, 30000),
        PM_ELIMIT);
    /* another target has its own box */
    ck_assert_int_eq(
        sig_offline_hold(&s, r, "other", "me", "offer", "{}", 2, 30000), PM_OK);
    ck_assert_uint_eq(queued, 3);
    sig_offline_free_all(&s);
    ck_assert_ptr_null(r->boxes);
    r->nclients--;
    sig_realm_release(&s, r);
    ck_assert_ptr_null(s.realms);
    event_base_free(base);
}
END_TEST

START_TEST(offline_mailbox_off)
{
    struct sig_conf off = conf;
    struct sig s;
    struct sig_realm *r;

    off.mailbox_max = 0;
    sig_setup(&s, NULL);
    s.conf = &off;
    r = sig_realm_get(&s, SIG_REALM_MESH, "");
    ck_assert_int_eq(
        sig_offline_hold(&s, r, "away", "me", "signal", "{}", 2, 30000),
        PM_ELIMIT);
    ck_assert_ptr_null(r->boxes);
    drop_realm(&s, r);
}
END_TEST

static Suite *
signaling_suite(void)
{
    Suite *su = suite_create("signaling");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, nearest_by_xor_distance);
    tcase_add_test(tc, nearest_mixed_lengths_and_non_hex);
    tcase_add_test(tc, nearest_matches_brute_force);
    tcase_add_test(tc, realm_remove_and_release);
    tcase_add_test(tc, not_found_texts);
    tcase_add_test(tc, offline_mailbox_is_bounded);
    tcase_add_test(tc, offline_mailbox_off);
    suite_add_tcase(su, tc);
    return su;
}

PM_TEST_MAIN(signaling_suite)
