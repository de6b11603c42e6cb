/*
 * signaling_realm: realms (a p2pmesh ?room= or the PeerJS key), the
 * registry of peer ids in each (local and, in cluster mode, remote), and
 * the choice of nearest peers for bootstrap lists and announcements. A
 * realm lives while a connection, a peer or a mailbox refers to it.
 * Loop thread.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "pm_metrics.h"
#include "pm_util.h"
#include "signaling.h"

static void sorted_insert(struct sig_realm *r, struct sig_client *c);
static void sorted_remove(struct sig_realm *r, struct sig_client *c);

struct sig_realm *
sig_realm_get(struct sig *s, enum sig_realm_kind kind, const char *name)
{
    char *hkey = pm_xasprintf("%c%s", (char)kind, name);
    struct sig_realm *r;

    HASH_FIND_STR(s->realms, hkey, r);
    if (r != NULL) {
        free(hkey);
        return r;
    }
    r = pm_xcalloc(1, sizeof *r);
    r->kind = kind;
    r->name = pm_xstrdup(name);
    r->hkey = hkey;
    HASH_ADD_KEYPTR(hh, s->realms, r->hkey, strlen(r->hkey), r);
    return r;
}

void
sig_realm_release(struct sig *s, struct sig_realm *r)
{
    if (r->nclients > 0 || r->boxes != NULL || r->peers != NULL)
        return;
    HASH_DEL(s->realms, r);
    free(r->name);
    free(r->hkey);
    free(r->sorted);
    free(r);
}

struct sig_client *
sig_realm_find(struct sig_realm *r, const char *id)
{
    struct sig_client *c;

    HASH_FIND_STR(r->peers, id, c);
    return c;
}

/* Big-endian value of a hex id, right-aligned in 64 bytes; false if not
 * hex. */
static bool
hex_key(const char *id, uint8_t key[64])
{
    size_t n = strlen(id), i;

    if (n == 0 || n > 128)
        return false;
    memset(key, 0, 64);
    for (i = 0; i < n; i++) {
        int c = tolower((unsigned char)id[n - 1 - i]), v;

        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return false;
        key[63 - i / 2] |= (uint8_t)(i % 2 ? v << 4 : v);
    }
    return true;
}

void
sig_realm_add(struct sig *s, struct sig_client *c, const char *id)
{
    cJSON *js = cJSON_CreateString(id);

    c->id = pm_xstrdup(id);
    c->id_json = cJSON_PrintUnformatted(js);
    cJSON_Delete(js);
    PM_ASSERT(c->id_json != NULL);
    c->from_member = pm_xasprintf(",\"from\":%s", c->id_json);
    c->hex = hex_key(id, c->key);
    if (c->hex)
        sorted_insert(c->realm, c);
    HASH_ADD_KEYPTR(hh, c->realm->peers, c->id, strlen(c->id), c);
    c->realm->npeers++;
    if (c->conn != NULL) {
        (*s->stats.peers)++;
        sig_cluster_joined(s, c);
    } else if (c->port != NULL) {
        c->port->joined(c->port->arg, c);
    }
}

void
sig_realm_remove(struct sig *s, struct sig_client *c)
{
    if (c->id == NULL)
        return;
    if (c->conn != NULL) {
        sig_cluster_left(s, c);
        (*s->stats.peers)--;
    } else if (c->port != NULL) {
        c->port->left(c->port->arg, c);
    }
    if (c->hex)
        sorted_remove(c->realm, c);
    HASH_DEL(c->realm->peers, c);
    c->realm->npeers--;
    free(c->id);
    free(c->id_json);
    free(c->from_member);
    c->id = c->id_json = c->from_member = NULL;
}

/*
 * Nearest peers. Hex ids are kept in a per-realm array sorted by value.
 * Ids sharing the first d bits with a target form one contiguous run of
 * that array, and the k nearest by XOR always lie inside the longest
 * shared prefix whose run still holds k of them; so a query binary-
 * searches d, then ranks only that run: O(log N + k) instead of O(N).
 * Non-hex ids (and every peer, when the target is not hex) are ranked by
 * a scan in string order after the hex ones, as the reference servers
 * fall back to string comparison for them.
 */
struct cand {
    struct sig_client *c;
    bool hex;
    uint8_t dist[64];
};

/* Negative when a is nearer than b. */
static int
cand_cmp(const struct cand *a, const struct cand *b)
{
    if (a->hex != b->hex)
        return a->hex ? -1 : 1;
    if (a->hex) {
        int d = memcmp(a->dist, b->dist, 64);

        if (d != 0)
            return d;
    }
    return strcmp(a->c->id, b->c->id);
}

/* Order of the sorted array: by value, then by id text. */
static int
key_cmp(const struct sig_client *a, const struct sig_client *b)
{
    int d = memcmp(a->key, b->key, 64);

    return d != 0 ? d : strcmp(a->id, b->id);
}

/* First index whose key is >= key (strict: > key). */
static size_t
bound(const struct sig_realm *r, const uint8_t key[64], bool strict)
{
    size_t lo = 0, hi = r->nsorted;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = memcmp(r->sorted[mid]->key, key, 64);

        if (d < 0 || (strict && d == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void
sorted_insert(struct sig_realm *r, struct sig_client *c)
{
    size_t lo = 0, hi = r->nsorted;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (key_cmp(r->sorted[mid], c) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (r->nsorted == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->sorted = pm_xrealloc(r->sorted, r->cap * sizeof *r->sorted);
    }
    memmove(r->sorted + lo + 1, r->sorted + lo,
            (r->nsorted - lo) * sizeof *r->sorted);
    r->sorted[lo] = c;
    r->nsorted++;
}

static void
sorted_remove(struct sig_realm *r, struct sig_client *c)
{
    size_t i = bound(r, c->key, false);

    while (i < r->nsorted && r->sorted[i] != c)
        i++;
    PM_ASSERT(i < r->nsorted);
    memmove(r->sorted + i, r->sorted + i + 1,
            (r->nsorted - i - 1) * sizeof *r->sorted);
    if (--r->nsorted == 0) {
        free(r->sorted);
        r->sorted = NULL;
        r->cap = 0;
    }
}

/* The run [lo, hi) of keys sharing the first bits bits with me. */
static void
prefix_run(const struct sig_realm *r, const uint8_t me[64], unsigned bits,
           size_t *lo, size_t *hi)
{
    uint8_t low[64], high[64];
    unsigned byte = bits / 8, rem = bits % 8;

    memcpy(low, me, 64);
    memcpy(high, me, 64);
    if (byte < 64) {
        uint8_t keep = (uint8_t)(0xff << (8 - rem));

        low[byte] &= keep;
        high[byte] |= (uint8_t)~keep;
        memset(low + byte + 1, 0x00, 63 - byte);
        memset(high + byte + 1, 0xff, 63 - byte);
    }
    *lo = bound(r, low, false);
    *hi = bound(r, high, true);
}

/* Offer cur to the k best so far (kept sorted, nearest first). */
static void
offer(struct cand *best, size_t *n, size_t k, const struct cand *cur)
{
    size_t j;

    if (*n == k && cand_cmp(cur, &best[k - 1]) >= 0)
        return;
    j = *n < k ? (*n)++ : k - 1;
    while (j > 0 && cand_cmp(cur, &best[j - 1]) < 0) {
        best[j] = best[j - 1];
        j--;
    }
    best[j] = *cur;
}

size_t
sig_realm_nearest(struct sig_realm *r, const char *id,
                  const struct sig_client *self, size_t k,
                  struct sig_client **out)
{
    struct cand *best, cur;
    struct sig_client *c, *tmp;
    uint8_t me[64];
    bool me_hex = hex_key(id, me);
    size_t n = 0, i, j, lo = 0, hi = r->nsorted;

    if (k == 0)
        return 0;
    best = pm_xmalloc(k * sizeof *best);
    if (me_hex) {
        /* Deepest prefix whose run holds k others (self may be in it). */
        size_t need = k + 1;
        unsigned a = 0, b = 512;

        while (a < b) {
            unsigned mid = (a + b + 1) / 2;
            size_t l, h;

            prefix_run(r, me, mid, &l, &h);
            if (h - l >= need)
                a = mid;
            else
                b = mid - 1;
        }
        prefix_run(r, me, a, &lo, &hi);
        for (i = lo; i < hi; i++) {
            if (r->sorted[i] == self)
                continue;
            cur.c = r->sorted[i];
            cur.hex = true;
            for (j = 0; j < 64; j++)
                cur.dist[j] = cur.c->key[j] ^ me[j];
            offer(best, &n, k, &cur);
        }
    }
    /* Non-hex peers come after every hex one; scan only if room is left
     * (for a non-hex target, everyone is ranked this way). */
    if (n < k && (!me_hex || r->nsorted < r->npeers)) {
        HASH_ITER(hh, r->peers, c, tmp)
        {
            if (c == self || (me_hex && c->hex))
                continue;
            cur.c = c;
            cur.hex = false;
            offer(best, &n, k, &cur);
        }
    }
    for (i = 0; i < n; i++)
        out[i] = best[i].c;
    free(best);
    return n;
}
