/*
 * tunnel_policy: where the server may connect (docs/tunnel.md, "Egress
 * policy"). Port lists for CONNECT and forwarded requests; allow and deny
 * lists of host names, domains, addresses and CIDRs; and the default
 * deny of loopback, unspecified, multicast, link-local (the metadata
 * endpoints) and the machine's own addresses, which only an entry naming
 * the destination lifts. Names are checked before resolving and every
 * resolved address after; IPv4-mapped IPv6 addresses count as IPv4.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "pm_util.h"
#include "tunnel.h"

enum pat_kind { PAT_ANY, PAT_NAME, PAT_DOMAIN, PAT_NET };

/* An address or network: v4 addresses are stored as v4-mapped v6. */
struct net {
    uint8_t a[16];
    int bits; /* prefix length over the 128 bits */
};

struct pattern {
    enum pat_kind kind;
    char *name; /* NAME: the host; DOMAIN: ".example.com" */
    struct net net;
};

struct plist {
    struct pattern *v;
    size_t n;
};

struct ports {
    bool any;
    int (*r)[2];
    size_t n;
};

struct tunnel_policy {
    struct ports connect_ports, http_ports;
    struct plist allow, deny;
    struct net *own;
    size_t nown;
};

enum dflt { D_NONE, D_PLAIN, D_LINKLOCAL };

static const struct {
    const char *net;
    enum dflt kind;
    const char *what;
} defaults[] = {
    {"127.0.0.0/8", D_PLAIN, "loopback"},
    {"::1/128", D_PLAIN, "loopback"},
    {"0.0.0.0/8", D_PLAIN, "unspecified"},
    {"::/128", D_PLAIN, "unspecified"},
    {"224.0.0.0/4", D_PLAIN, "multicast"},
    {"255.255.255.255/32", D_PLAIN, "broadcast"},
    {"ff00::/8", D_PLAIN, "multicast"},
    {"169.254.0.0/16", D_LINKLOCAL, "link-local (metadata endpoints)"},
    {"fe80::/10", D_LINKLOCAL, "link-local"},
    {"fd00:ec2::254/128", D_LINKLOCAL, "the EC2 metadata endpoint"},
};

/* ---- parsing ------------------------------------------------------------ */

static void
net_from_v4(struct net *n, const struct in_addr *a, int bits)
{
    memset(n->a, 0, 10);
    n->a[10] = n->a[11] = 0xff;
    memcpy(n->a + 12, a, 4);
    n->bits = bits + 96;
}

/* "10.0.0.0/8", "fd00::/8", "1.2.3.4", "::1": PM_OK or PM_EINVAL. */
static int
net_parse(const char *s, struct net *n)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);
    struct in_addr a4;
    bool v4;
    long bits;
    char *end;

    if (len == 0 || len >= sizeof buf)
        return PM_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        v4 = true;
        net_from_v4(n, &a4, 32);
    } else if (inet_pton(AF_INET6, buf, n->a) == 1) {
        v4 = false;
        n->bits = 128;
    } else {
        return PM_EINVAL;
    }
    if (slash == NULL)
        return PM_OK;
    bits = strtol(slash + 1, &end, 10);
    if (*end != '\0' || end == slash + 1 || bits < 0 || bits > (v4 ? 32 : 128))
        return PM_EINVAL;
    n->bits = (int)bits + (v4 ? 96 : 0);
    return PM_OK;
}

static bool
net_contains(const struct net *n, const uint8_t a[16])
{
    int full = n->bits / 8, rest = n->bits % 8;

    if (memcmp(n->a, a, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((n->a[full] ^ a[full]) & (0xff << (8 - rest))) == 0;
}

/* Narrower than "everything" of its family (0.0.0.0/0, ::/0)? */
static bool
net_specific(const struct net *n)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};

    return memcmp(n->a, mapped, 12) == 0 ? n->bits > 96 : n->bits > 0;
}

/* Is network inner inside outer (so naming inner names outer's kind)? */
static bool
net_within(const struct net *inner, const struct net *outer)
{
    return inner->bits >= outer->bits && net_contains(outer, inner->a);
}

static int
plist_parse(const char *text, const char *key, struct plist *l, char *err,
            size_t errlen)
{
    const char *p = text;

    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[TUNNEL_NAME_MAX];
        struct pattern pat;
        size_t i;

        while (len > 0 && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            len--;
        if (len >= sizeof item)
            return pm_errf(err, errlen, PM_EINVAL, "%s: entry too long", key);
        memcpy(item, p, len);
        item[len] = '\0';
        for (i = 0; i < len; i++)
            item[i] = (char)tolower((unsigned char)item[i]);
        if (len > 1 && item[len - 1] == '.')
            item[--len] = '\0';
        p = comma ? comma + 1 : NULL;
        if (len == 0)
            continue;
        memset(&pat, 0, sizeof pat);
        if (strcmp(item, "*") == 0) {
            pat.kind = PAT_ANY;
        } else if (net_parse(item, &pat.net) == PM_OK) {
            pat.kind = PAT_NET;
        } else if (strchr(item, '/') != NULL || strchr(item, ':') != NULL) {
            return pm_errf(err, errlen, PM_EINVAL,
                           "%s: '%s' is not a host, domain or CIDR", key, item);
        } else if (item[0] == '.' || strncmp(item, "*.", 2) == 0) {
            pat.kind = PAT_DOMAIN;
            pat.name = pm_xstrdup(item[0] == '.' ? item : item + 1);
        } else {
            pat.kind = PAT_NAME;
            pat.name = pm_xstrdup(item);
        }
        l->v = pm_xrealloc(l->v, (l->n + 1) * sizeof *l->v);
        l->v[l->n++] = pat;
    }
    return PM_OK;
}

static int
ports_parse(const char *text, const char *key, struct ports *pl, char *err,
            size_t errlen)
{
    const char *p = text;

    while (p != NULL && *p != '\0') {
        long lo, hi;
        char *end;

        while (isspace((unsigned char)*p) || *p == ',')
            p++;
        if (*p == '\0')
            break;
        if (*p == '*') {
            pl->any = true;
            p++;
            continue;
        }
        lo = strtol(p, &end, 10);
        hi = lo;
        if (end != p && *end == '-') {
            p = end + 1;
            hi = strtol(p, &end, 10);
        }
        if (end == p || lo < 1 || hi > 65535 || lo > hi ||
            (*end != '\0' && *end != ',' && !isspace((unsigned char)*end)))
            return pm_errf(err, errlen, PM_EINVAL,
                           "%s: expected ports and ranges like "
                           "443,8000-8100 or *",
                           key);
        pl->r = pm_xrealloc(pl->r, (pl->n + 1) * sizeof *pl->r);
        pl->r[pl->n][0] = (int)lo;
        pl->r[pl->n][1] = (int)hi;
        pl->n++;
        p = end;
    }
    return PM_OK;
}

static bool
ports_has(const struct ports *pl, int port)
{
    size_t i;

    if (pl->any)
        return true;
    for (i = 0; i < pl->n; i++)
        if (port >= pl->r[i][0] && port <= pl->r[i][1])
            return true;
    return false;
}

static void
own_addresses(struct tunnel_policy *p)
{
    struct ifaddrs *ifs, *i;

    if (getifaddrs(&ifs) != 0)
        return;
    for (i = ifs; i != NULL; i = i->ifa_next) {
        struct net n;

        if (i->ifa_addr == NULL)
            continue;
        if (i->ifa_addr->sa_family == AF_INET) {
            net_from_v4(&n, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 32);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            memcpy(n.a, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
            n.bits = 128;
        } else {
            continue;
        }
        p->own = pm_xrealloc(p->own, (p->nown + 1) * sizeof *p->own);
        p->own[p->nown++] = n;
    }
    freeifaddrs(ifs);
}

struct tunnel_policy *
tunnel_policy_new(const struct tunnel_conf *conf, char *err, size_t errlen)
{
    struct tunnel_policy *p = pm_xcalloc(1, sizeof *p);

    if (ports_parse(conf->connect_ports, "tunnel.connect_ports",
                    &p->connect_ports, err, errlen) != PM_OK ||
        ports_parse(conf->http_ports, "tunnel.http_ports", &p->http_ports, err,
                    errlen) != PM_OK ||
        plist_parse(conf->allow_hosts, "tunnel.allow_hosts", &p->allow, err,
                    errlen) != PM_OK ||
        plist_parse(conf->deny_hosts, "tunnel.deny_hosts", &p->deny, err,
                    errlen) != PM_OK) {
        tunnel_policy_free(p);
        return NULL;
    }
    own_addresses(p);
    return p;
}

static void
plist_free(struct plist *l)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
}

void
tunnel_policy_free(struct tunnel_policy *p)
{
    if (p == NULL)
        return;
    free(p->connect_ports.r);
    free(p->http_ports.r);
    plist_free(&p->allow);
    plist_free(&p->deny);
    free(p->own);
    free(p);
}

/* ---- matching ----------------------------------------------------------- */

/* Does a name pattern of l match host (already lowercase, no dot)? */
static bool
name_match(const struct pattern *pat, const char *host)
{
    size_t hl = strlen(host), dl;

    switch (pat->kind) {
    case PAT_ANY:
        return true;
    case PAT_NAME:
        return strcmp(pat->name, host) == 0;
    case PAT_DOMAIN:
        dl = strlen(pat->name); /* ".example.com" */
        return strcmp(pat->name + 1, host) == 0 ||
               (hl > dl && strcmp(host + hl - dl, pat->name) == 0);
    case PAT_NET:
        return false;
    }
    return false;
}

static void
lower(const char *host, char *out, size_t outlen)
{
    size_t i;

    for (i = 0; host[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (char)tolower((unsigned char)host[i]);
    if (i > 1 && out[i - 1] == '.')
        i--;
    out[i] = '\0';
}

int
tunnel_policy_name(const struct tunnel_policy *p, const char *host, int port,
                   bool connect, int *status, const char **error, char *details,
                   size_t dlen)
{
    char h[TUNNEL_NAME_MAX];
    size_t i;

    if (!ports_has(connect ? &p->connect_ports : &p->http_ports, port)) {
        *status = 403;
        *error = "http_request_denied";
        snprintf(details, dlen, "port %d is not in %s", port,
                 connect ? "tunnel.connect_ports" : "tunnel.http_ports");
        return PM_EINVAL;
    }
    lower(host, h, sizeof h);
    for (i = 0; i < p->deny.n; i++)
        if (p->deny.v[i].kind != PAT_NET && name_match(&p->deny.v[i], h)) {
            *status = 403;
            *error = "destination_ip_prohibited";
            snprintf(details, dlen, "%s is denied by tunnel.deny_hosts", h);
            return PM_EINVAL;
        }
    return PM_OK;
}

bool
tunnel_policy_addr(const struct tunnel_policy *p, const char *host,
                   const struct sockaddr *sa, char *details, size_t dlen)
{
    uint8_t a[16];
    char h[TUNNEL_NAME_MAX], text[64];
    bool by_name = false, exact_name = false, allowed;
    const struct net *by_net = NULL;
    enum dflt kind = D_NONE;
    const char *what = NULL;
    struct net dn;
    size_t i;

    if (sa->sa_family == AF_INET) {
        struct net n;

        net_from_v4(&n, &((const struct sockaddr_in *)sa)->sin_addr, 32);
        memcpy(a, n.a, 16);
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text,
                  sizeof text);
    } else {
        const struct in6_addr *a6 =
            &((const struct sockaddr_in6 *)sa)->sin6_addr;

        memcpy(a, a6, 16);
        if (IN6_IS_ADDR_V4MAPPED(a6))
            inet_ntop(AF_INET, a + 12, text, sizeof text);
        else
            inet_ntop(AF_INET6, a6, text, sizeof text);
    }
    lower(host, h, sizeof h);
    for (i = 0; i < p->deny.n; i++)
        if (p->deny.v[i].kind == PAT_NET &&
            net_contains(&p->deny.v[i].net, a)) {
            snprintf(details, dlen, "%s is denied by tunnel.deny_hosts", text);
            return false;
        }
    for (i = 0; i < p->allow.n; i++) {
        const struct pattern *pat = &p->allow.v[i];

        if (pat->kind == PAT_NET) {
            if (net_contains(&pat->net, a) &&
                (by_net == NULL || pat->net.bits > by_net->bits))
                by_net = &pat->net;
        } else if (name_match(pat, h)) {
            by_name = true;
            exact_name |= pat->kind == PAT_NAME;
        }
    }
    if (p->allow.n > 0 && !by_name && by_net == NULL) {
        snprintf(details, dlen, "%s is not in tunnel.allow_hosts", h);
        return false;
    }
    for (i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        net_parse(defaults[i].net, &dn);
        if (net_contains(&dn, a)) {
            kind = defaults[i].kind;
            what = defaults[i].what;
            break;
        }
    }
    for (i = 0; kind == D_NONE && i < p->nown; i++)
        if (net_contains(&p->own[i], a)) {
            kind = D_PLAIN;
            what = "an address of this server";
        }
    if (kind == D_NONE)
        return true;
    if (kind == D_LINKLOCAL)
        allowed = by_net != NULL && net_within(by_net, &dn);
    else
        allowed = exact_name || (by_net != NULL && net_specific(by_net));
    if (!allowed)
        snprintf(details, dlen,
                 "%s is %s (denied unless tunnel.allow_hosts names it)", text,
                 what);
    return allowed;
}
