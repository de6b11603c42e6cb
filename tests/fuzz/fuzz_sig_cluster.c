/*
 * fuzz_sig_cluster: drives sig_cluster_decode and
 * sig_cluster_snapshot_next (roles/signaling/signaling_cluster.c), how a
 * signaling instance reads one message another instance published on the
 * cluster's Redis channels (heartbeats, joins, leaves, relays, snapshot
 * chunks) before it touches its registry.
 *
 * Input: the payload of one Redis message on {prefix}:events or
 * {prefix}:inst:{id} (seeds: messages as the instances write them, and
 * near misses: a length past the end, an overlong id, a NUL inside a
 * field, a relay of an unknown realm kind, a truncated snapshot).
 *
 * Asserts: decoding twice gives the same result; every string field is
 * NUL-ended inside its buffer and holds no NUL; the relay payload lies
 * inside the input; a snapshot's entries end (each is read from a
 * shrinking rest inside the input). A decoded J, L or R written again in
 * the wire format decodes to the same fields.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "signaling.h"

struct out {
    char *p;
    size_t n;
};

static void
put(struct out *o, const void *d, size_t n)
{
    o->p = realloc(o->p, o->n + n + 1);
    FUZZ_CHECK(o->p != NULL);
    memcpy(o->p + o->n, d, n);
    o->n += n;
}

static void
field(struct out *o, const void *d, size_t n)
{
    char hdr[24];

    snprintf(hdr, sizeof hdr, "%zu:", n);
    put(o, hdr, strlen(hdr));
    put(o, d, n);
}

static void
str(struct out *o, const char *s)
{
    field(o, s, strlen(s));
}

#define STR_OK(a) FUZZ_CHECK(memchr((a), '\0', sizeof(a)) != NULL)

static void
strings_ok(const struct sig_cluster_msg *m)
{
    STR_OK(m->inst);
    STR_OK(m->realm);
    STR_OK(m->id);
    STR_OK(m->token);
    STR_OK(m->from);
    STR_OK(m->rtype);
    STR_OK(m->hop);
    STR_OK(m->sent);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    struct sig_cluster_msg m, m2;
    struct out o = {0};
    bool ok = sig_cluster_decode(msg, size, &m);
    size_t before;
    int rc;

    FUZZ_CHECK(sig_cluster_decode(msg, size, &m2) == ok);
    if (!ok)
        return 0;
    FUZZ_CHECK(memcmp(&m, &m2, sizeof m) == 0);
    FUZZ_CHECK(size > 0 && m.type == msg[0]);
    strings_ok(&m);
    if (m.type == 'R' && m.ok) {
        FUZZ_CHECK(m.kind == SIG_REALM_MESH || m.kind == SIG_REALM_PEERJS);
        FUZZ_CHECK(m.payload >= msg && m.len <= size &&
                   m.payload + m.len <= msg + size);
    }
    if (m.type == 'Y' && m.ok) {
        while (m.rest != NULL) {
            FUZZ_CHECK(m.rest >= msg && m.rest + m.nrest == msg + size);
            before = m.nrest;
            rc = sig_cluster_snapshot_next(&m);
            strings_ok(&m);
            if (rc <= 0)
                break;
            FUZZ_CHECK(m.nrest < before);
        }
        return 0;
    }
    if (!m.ok || (m.type != 'J' && m.type != 'L' && m.type != 'R'))
        return 0;
    /* written again the way the instances write it */
    put(&o, &m.type, 1);
    str(&o, m.inst);
    field(&o, &m.kind, m.kind != '\0');
    str(&o, m.realm);
    str(&o, m.id);
    if (m.type == 'J')
        str(&o, m.token);
    if (m.type == 'R') {
        str(&o, m.from);
        str(&o, m.rtype);
        str(&o, m.hop);
        str(&o, m.sent);
        field(&o, m.payload, m.len);
    }
    FUZZ_CHECK(sig_cluster_decode(o.p, o.n, &m2) && m2.ok);
    FUZZ_CHECK(m2.type == m.type && m2.kind == m.kind);
    FUZZ_CHECK(strcmp(m2.inst, m.inst) == 0 && strcmp(m2.realm, m.realm) == 0 &&
               strcmp(m2.id, m.id) == 0 && strcmp(m2.token, m.token) == 0 &&
               strcmp(m2.from, m.from) == 0 && strcmp(m2.rtype, m.rtype) == 0 &&
               strcmp(m2.hop, m.hop) == 0 && strcmp(m2.sent, m.sent) == 0);
    FUZZ_CHECK(m2.len == m.len &&
               (m.len == 0 || memcmp(m2.payload, m.payload, m.len) == 0));
    free(o.p);
    return 0;
}
