/*
 * signaling_realm: realms (the ?room= scope), the registry of joined peer
 * ids in each, and the choice of nearest peers for bootstrap lists and
 * join announcements. A realm lives while a connection or an offline
 * mailbox refers to it. Loop thread.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "pm_metrics.h"
#include "pm_util.h"
#include "signaling.h"

struct sig_realm *
sig_realm_get(struct sig *s, const char *name)
{
    struct sig_realm *r;

    HASH_FIND_STR(s->realms, name, r);
    if (r == NULL) {
        r = pm_xcalloc(1, sizeof *r);
        r->name = pm_xstrdup(name);
        HASH_ADD_KEYPTR(hh, s->realms, r->name, strlen(r->name), r);
    }
    return r;
}

void
sig_realm_release(struct sig *s, struct sig_realm *r)
{
    if (r->nclients > 0 || r->boxes != NULL)
        return;
    HASH_DEL(s->realms, r);
    free(r->name);
    free(r);
}

struct sig_client *
sig_realm_find(struct sig_realm *r, const char *id)
{
    struct sig_client *c;

    HASH_FIND_STR(r->peers, id, c);
    return c;
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
    HASH_ADD_KEYPTR(hh, c->realm->peers, c->id, strlen(c->id), c);
    c->realm->npeers++;
    (*s->stats.peers)++;
}

void
sig_realm_remove(struct sig *s, struct sig_client *c)
{
    if (c->id == NULL)
        return;
    HASH_DEL(c->realm->peers, c);
    c->realm->npeers--;
    (*s->stats.peers)--;
    free(c->id);
    free(c->id_json);
    free(c->from_member);
    c->id = c->id_json = c->from_member = NULL;
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

size_t
sig_realm_nearest(struct sig_realm *r, const char *id,
                  const struct sig_client *self, size_t k,
                  struct sig_client **out)
{
    struct cand *best, cur;
    struct sig_client *c, *tmp;
    uint8_t me[64];
    bool me_hex = hex_key(id, me);
    size_t n = 0, i, j;

    if (k == 0)
        return 0;
    best = pm_xmalloc(k * sizeof *best);
    HASH_ITER(hh, r->peers, c, tmp)
    {
        if (c == self)
            continue;
        cur.c = c;
        cur.hex = me_hex && hex_key(c->id, cur.dist);
        if (cur.hex)
            for (i = 0; i < 64; i++)
                cur.dist[i] ^= me[i];
        if (n == k && cand_cmp(&cur, &best[k - 1]) >= 0)
            continue;
        /* Insert in order, dropping the farthest when full. */
        j = n < k ? n++ : k - 1;
        while (j > 0 && cand_cmp(&cur, &best[j - 1]) < 0) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = cur;
    }
    for (i = 0; i < n; i++)
        out[i] = best[i].c;
    free(best);
    return n;
}
