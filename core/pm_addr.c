/*
 * pm_addr: address text, CIDR lists and client-address resolution behind
 * trusted proxies. Addresses are compared as 16-byte IPv6 values (IPv4
 * mapped into ::ffff:0:0/96), so one list mixes both families.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "pm_addr.h"
#include "pm_util.h"

struct cidr {
    uint8_t addr[16];
    int bits; /* prefix length over the 128-bit form */
};

struct pm_cidr_list {
    struct cidr *v;
    size_t n;
};

void
pm_addr_format(const struct sockaddr *sa, char out[PM_ADDR_STRLEN])
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out,
                  PM_ADDR_STRLEN);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a =
            &((const struct sockaddr_in6 *)sa)->sin6_addr;

        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], out, PM_ADDR_STRLEN);
        else
            inet_ntop(AF_INET6, a, out, PM_ADDR_STRLEN);
    } else {
        pm_strlcpy(out, "unknown", PM_ADDR_STRLEN);
    }
}

/* Text address to the 16-byte form; returns false if not an address. */
static bool
to_v6(const char *s, uint8_t out[16], bool *is_v4)
{
    struct in_addr a4;

    if (inet_pton(AF_INET, s, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *is_v4 = true;
        return true;
    }
    *is_v4 = false;
    return inet_pton(AF_INET6, s, out) == 1;
}

int
pm_cidr_list_parse(const char *text, struct pm_cidr_list **out, char *err,
                   size_t errlen)
{
    struct pm_cidr_list *l = pm_xcalloc(1, sizeof *l);
    char *copy, *tok, *save = NULL;

    *out = l;
    if (text == NULL)
        return PM_OK;
    copy = pm_xstrdup(text);
    for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
         tok = strtok_r(NULL, ", \t", &save)) {
        struct cidr c;
        char *slash = strchr(tok, '/');
        bool v4;
        int max;

        if (slash != NULL)
            *slash = '\0';
        if (!to_v6(tok, c.addr, &v4)) {
            pm_errf(err, errlen, PM_EINVAL, "'%s' is not an IP address", tok);
            goto fail;
        }
        max = v4 ? 32 : 128;
        c.bits = max;
        if (slash != NULL) {
            char *end;
            long b = strtol(slash + 1, &end, 10);

            if (*end != '\0' || end == slash + 1 || b < 0 || b > max) {
                pm_errf(err, errlen, PM_EINVAL, "bad prefix length in '%s/%s'",
                        tok, slash + 1);
                goto fail;
            }
            c.bits = (int)b;
        }
        if (v4)
            c.bits += 96;
        l->v = pm_xrealloc(l->v, (l->n + 1) * sizeof *l->v);
        l->v[l->n++] = c;
    }
    free(copy);
    return PM_OK;
fail:
    free(copy);
    pm_cidr_list_free(l);
    *out = NULL;
    return PM_EINVAL;
}

void
pm_cidr_list_free(struct pm_cidr_list *l)
{
    if (l == NULL)
        return;
    free(l->v);
    free(l);
}

bool
pm_cidr_list_empty(const struct pm_cidr_list *l)
{
    return l == NULL || l->n == 0;
}

static bool
in_prefix(const uint8_t a[16], const struct cidr *c)
{
    int full = c->bits / 8, rem = c->bits % 8;

    if (memcmp(a, c->addr, (size_t)full) != 0)
        return false;
    if (rem == 0)
        return true;
    return ((a[full] ^ c->addr[full]) & (0xff << (8 - rem))) == 0;
}

bool
pm_cidr_list_contains(const struct pm_cidr_list *l, const char *ip)
{
    uint8_t a[16];
    bool v4;
    size_t i;

    if (pm_cidr_list_empty(l) || !to_v6(ip, a, &v4))
        return false;
    for (i = 0; i < l->n; i++)
        if (in_prefix(a, &l->v[i]))
            return true;
    return false;
}

void
pm_addr_client(const struct pm_cidr_list *trusted, const char *peer,
               const char *xff, size_t xff_len, char out[PM_ADDR_STRLEN])
{
    pm_strlcpy(out, peer, PM_ADDR_STRLEN);
    if (xff == NULL || !pm_cidr_list_contains(trusted, peer))
        return;
    /* Walk right to left; stop at the first hop we do not trust. */
    while (xff_len > 0) {
        const char *end = xff + xff_len, *start = end;
        char hop[PM_ADDR_STRLEN];
        uint8_t a[16];
        bool v4;
        size_t n;

        while (start > xff && start[-1] != ',')
            start--;
        xff_len = start > xff ? (size_t)(start - 1 - xff) : 0;
        while (start < end && (*start == ' ' || *start == '\t'))
            start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        n = (size_t)(end - start);
        if (n == 0 || n >= sizeof hop)
            return;
        memcpy(hop, start, n);
        hop[n] = '\0';
        if (!to_v6(hop, a, &v4))
            return; /* garbage: keep the last trusted answer */
        pm_strlcpy(out, hop, PM_ADDR_STRLEN);
        if (!pm_cidr_list_contains(trusted, hop))
            return;
    }
}
