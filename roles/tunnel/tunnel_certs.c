/*
 * tunnel_certs: --tunnel.gen_certs. Validates the name lists, then writes
 * into one directory a private CA (ca.crt/ca.key, reused when both are
 * there), the proxy's server certificate (server.crt/server.key) and one
 * client certificate per agent (NAME.crt/NAME.key). ECDSA P-256 keys as
 * unencrypted PKCS#8 PEM (0600), SHA-256 signatures, random 128-bit
 * serials, notBefore five minutes in the past. Every file is written to
 * a temporary name in the same directory and renamed into place.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pm_util.h"
#include "tunnel_certs.h"

#define CA_DAYS 3650
#define MAX_DAYS 3650
#define SKEW_SECONDS 300 /* notBefore this far back, for clock skew */
#define CN_MAX 64        /* ub-common-name of RFC 5280 */
#define ORG "p2pmesh"
#define CA_CN "p2pmesh tunnel CA"
#define CLIENT_CHARS                                                           \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define LABEL_CHARS                                                            \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"

/* One X.509v3 extension in openssl.cnf value syntax. */
struct ext {
    int nid;
    const char *value;
};

static const struct ext ca_exts[] = {
    {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
    {NID_key_usage, "critical,keyCertSign,cRLSign"},
    {NID_subject_key_identifier, "hash"},
    {0, NULL}};

static const struct ext server_exts[] = {
    {NID_basic_constraints, "CA:FALSE"},
    {NID_key_usage, "critical,digitalSignature"},
    {NID_ext_key_usage, "serverAuth"},
    {NID_subject_key_identifier, "hash"},
    {NID_authority_key_identifier, "keyid:always"},
    {0, NULL}};

static const struct ext client_exts[] = {
    {NID_basic_constraints, "CA:FALSE"},
    {NID_key_usage, "critical,digitalSignature"},
    {NID_ext_key_usage, "clientAuth"},
    {NID_subject_key_identifier, "hash"},
    {NID_authority_key_identifier, "keyid:always"},
    {0, NULL}};

/* A certificate and its private key. */
struct pair {
    X509 *crt;
    EVP_PKEY *key;
};

struct list {
    char **items;
    size_t n;
};

/* The last queued OpenSSL error as text, and clear the queue. */
static const char *
ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        pm_strlcpy(buf, "unknown error", len);
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* s with anything but printable ASCII shown as '?', for a one-line
 * reason. */
static const char *
printable(const char *s, char *buf, size_t len)
{
    size_t i;

    pm_strlcpy(buf, s, len);
    for (i = 0; buf[i] != '\0'; i++) {
        if (!isprint((unsigned char)buf[i]))
            buf[i] = '?';
    }
    return buf;
}

static void
list_free(struct list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Split a comma list, trimming whitespace; empty items are refused. */
static int
list_split(const char *text, const char *what, struct list *l, char *err,
           size_t errlen)
{
    const char *p = text;

    if (text == NULL || text[strspn(text, " \t\r\n")] == '\0')
        return pm_errf(err, errlen, PM_EINVAL, "%s is empty", what);
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma != NULL ? comma : p + strlen(p);

        while (p < e && isspace((unsigned char)*p))
            p++;
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        if (e == p) {
            list_free(l);
            return pm_errf(err, errlen, PM_EINVAL, "%s has an empty item",
                           what);
        }
        l->items = pm_xrealloc(l->items, (l->n + 1) * sizeof *l->items);
        l->items[l->n++] = pm_xstrndup(p, (size_t)(e - p));
        if (comma == NULL)
            return PM_OK;
        p = comma + 1;
    }
}

static bool
is_ip(const char *s)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* A host name of letters, digits and '-' in dot-separated labels of 1..63,
 * at most 253 long, optionally starting with the wildcard label "*.". */
static bool
dns_name_ok(const char *s)
{
    if (strlen(s) > 253)
        return false;
    if (strncmp(s, "*.", 2) == 0)
        s += 2;
    for (;;) {
        size_t label = strspn(s, LABEL_CHARS);

        if (label == 0 || label > 63)
            return false;
        s += label;
        if (*s == '\0')
            return true;
        if (*s != '.')
            return false;
        s++;
    }
}

/* Check the server names and build the subjectAltName value: DNS for each
 * name (IP for an address literal), then IP:127.0.0.1. */
static int
names_check(const struct list *l, char **san, char *err, size_t errlen)
{
    char *v = pm_xstrdup(""), *next, buf[80];
    size_t i;

    PM_ASSERT(l->n > 0); /* list_split refuses an empty list */
    if (strlen(l->items[0]) > CN_MAX) {
        free(v);
        return pm_errf(err, errlen, PM_EINVAL,
                       "tunnel.cert_names: the first name (the CN) is longer "
                       "than %d characters",
                       CN_MAX);
    }
    for (i = 0; i < l->n; i++) {
        const char *n = l->items[i];
        bool ip = is_ip(n);

        if (!ip && !dns_name_ok(n)) {
            free(v);
            return pm_errf(err, errlen, PM_EINVAL,
                           "tunnel.cert_names: \"%s\" is not a host name",
                           printable(n, buf, sizeof buf));
        }
        next = pm_xasprintf("%s%s:%s,", v, ip ? "IP" : "DNS", n);
        free(v);
        v = next;
    }
    *san = pm_xasprintf("%sIP:127.0.0.1", v);
    free(v);
    return PM_OK;
}

static int
clients_check(const struct list *l, char *err, size_t errlen)
{
    char buf[80];
    size_t i, j;

    for (i = 0; i < l->n; i++) {
        const char *n = l->items[i];
        size_t len = strlen(n);

        if (len > CN_MAX || strspn(n, CLIENT_CHARS) != len)
            return pm_errf(err, errlen, PM_EINVAL,
                           "tunnel.cert_clients: bad name \"%s\" (want 1 to "
                           "%d of A-Z a-z 0-9 . _ -)",
                           printable(n, buf, sizeof buf), CN_MAX);
        if (strcmp(n, "ca") == 0 || strcmp(n, "server") == 0)
            return pm_errf(err, errlen, PM_EINVAL,
                           "tunnel.cert_clients: \"%s\" is reserved", n);
        for (j = 0; j < i; j++) {
            if (strcmp(l->items[j], n) == 0)
                return pm_errf(err, errlen, PM_EINVAL,
                               "tunnel.cert_clients: \"%s\" is listed twice",
                               n);
        }
    }
    return PM_OK;
}

static int
dir_make(const char *dir, char *err, size_t errlen)
{
    struct stat st;

    if (mkdir(dir, 0700) == 0)
        return PM_OK;
    if (errno != EEXIST)
        return pm_errf(err, errlen, PM_EIO, "%s: %s", dir, strerror(errno));
    if (stat(dir, &st) != 0)
        return pm_errf(err, errlen, PM_EIO, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return pm_errf(err, errlen, PM_EIO, "%s: not a directory", dir);
    return PM_OK;
}

/* Write data to dir/.file.tmp with mode, then rename it to dir/file. */
static int
file_write(const char *dir, const char *file, const char *data, size_t len,
           mode_t mode, char *err, size_t errlen)
{
    char *tmp = pm_xasprintf("%s/.%s.tmp", dir, file);
    char *path = pm_xasprintf("%s/%s", dir, file);
    int fd, rv = PM_OK;
    size_t off = 0;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (fchmod(fd, mode) != 0)
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
    while (rv == PM_OK && off < len) {
        ssize_t n = write(fd, data + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
        else
            off += (size_t)n;
    }
    if (rv == PM_OK && fsync(fd) != 0)
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rv == PM_OK)
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", tmp, strerror(errno));
    if (rv == PM_OK && rename(tmp, path) != 0)
        rv = pm_errf(err, errlen, PM_EIO, "%s: %s", path, strerror(errno));
    if (rv != PM_OK)
        unlink(tmp);
out:
    free(tmp);
    free(path);
    return rv;
}

/* Write crt (0644), or key when crt is NULL (0600), as PEM to dir/file. */
static int
pem_write(const char *dir, const char *file, X509 *crt, EVP_PKEY *key,
          FILE *out, char *err, size_t errlen)
{
    BIO *b = BIO_new(crt != NULL ? BIO_s_mem() : BIO_s_secmem());
    char *data, e[256];
    long len;
    int rv;

    if (b == NULL ||
        (crt != NULL ? PEM_write_bio_X509(b, crt)
                     : PEM_write_bio_PKCS8PrivateKey(b, key, NULL, NULL, 0,
                                                     NULL, NULL)) != 1) {
        BIO_free(b);
        return pm_errf(err, errlen, PM_EIO, "%s: %s", file,
                       ssl_reason(e, sizeof e));
    }
    len = BIO_get_mem_data(b, &data);
    rv = file_write(dir, file, data, (size_t)len, crt != NULL ? 0644 : 0600,
                    err, errlen);
    BIO_free(b);
    if (rv == PM_OK && out != NULL)
        fprintf(out, "wrote %s/%s\n", dir, file);
    return rv;
}

static bool
ext_add(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    bool ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;

    X509_EXTENSION_free(ext);
    return ok;
}

/* A certificate for key with subject O=p2pmesh, CN=cn, signed by issuer
 * (self-signed when issuer->crt is NULL); NULL on failure, the reason left
 * in the OpenSSL error queue. */
static X509 *
cert_make(const char *cn, EVP_PKEY *key, const struct pair *issuer,
          int64_t days, const struct ext *exts, const char *san)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    X509_NAME *subject;
    X509V3_CTX ctx;
    bool ok;

    ok = x != NULL && serial != NULL && X509_set_version(x, X509_VERSION_3) &&
         BN_rand(serial, 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) &&
         BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL &&
         X509_gmtime_adj(X509_getm_notBefore(x), -SKEW_SECONDS) != NULL &&
         X509_time_adj_ex(X509_getm_notAfter(x), (int)days, -SKEW_SECONDS,
                          NULL) != NULL;
    if (ok) {
        subject = X509_get_subject_name(x);
        ok =
            X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC,
                                       (const unsigned char *)ORG, -1, -1, 0) &&
            X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                       (const unsigned char *)cn, -1, -1, 0) &&
            X509_set_issuer_name(x, issuer->crt != NULL
                                        ? X509_get_subject_name(issuer->crt)
                                        : subject) &&
            X509_set_pubkey(x, key);
    }
    if (ok) {
        X509V3_set_ctx(&ctx, issuer->crt != NULL ? issuer->crt : x, x, NULL,
                       NULL, 0);
        for (; ok && exts->nid != 0; exts++)
            ok = ext_add(x, &ctx, exts->nid, exts->value);
        if (ok && san != NULL)
            ok = ext_add(x, &ctx, NID_subject_alt_name, san);
    }
    ok = ok && X509_sign(x, issuer->key, EVP_sha256()) > 0;
    BN_free(serial);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/*
 * Make a new P-256 key and a certificate for it (see cert_make) and write
 * them to dir/base.key and dir/base.crt. With keep, the pair is handed to
 * the caller, who frees it.
 */
static int
issue(const char *dir, const char *base, const char *cn, const struct ext *exts,
      const char *san, const struct pair *issuer, int64_t days,
      struct pair *keep, FILE *out, char *err, size_t errlen)
{
    char *kf = pm_xasprintf("%s.key", base), *cf = pm_xasprintf("%s.crt", base);
    struct pair p = {NULL, EVP_EC_gen("P-256")};
    struct pair self = {NULL, p.key};
    char e[256];
    int rv = PM_OK;

    if (p.key == NULL)
        rv = pm_errf(err, errlen, PM_EIO, "%s: key generation: %s", kf,
                     ssl_reason(e, sizeof e));
    if (rv == PM_OK) {
        p.crt = cert_make(cn, p.key, issuer != NULL ? issuer : &self, days,
                          exts, san);
        if (p.crt == NULL)
            rv = pm_errf(err, errlen, PM_EIO, "%s: %s", cf,
                         ssl_reason(e, sizeof e));
    }
    if (rv == PM_OK)
        rv = pem_write(dir, kf, NULL, p.key, out, err, errlen);
    if (rv == PM_OK)
        rv = pem_write(dir, cf, p.crt, NULL, out, err, errlen);
    if (rv == PM_OK && keep != NULL) {
        *keep = p;
    } else {
        X509_free(p.crt);
        EVP_PKEY_free(p.key);
    }
    free(kf);
    free(cf);
    return rv;
}

static int
file_exists(const char *path, bool *yes, char *err, size_t errlen)
{
    struct stat st;

    *yes = stat(path, &st) == 0;
    if (!*yes && errno != ENOENT)
        return pm_errf(err, errlen, PM_EIO, "%s: %s", path, strerror(errno));
    return PM_OK;
}

/* Never prompt for a pass phrase: an encrypted ca.key is an error. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Load ca.crt and ca.key, which must be a CA and its key. */
static int
ca_load(const char *crt_path, const char *key_path, struct pair *ca, char *err,
        size_t errlen)
{
    BIO *b;
    char e[256];

    b = BIO_new_file(crt_path, "r");
    ca->crt = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (ca->crt == NULL)
        return pm_errf(err, errlen, PM_EIO,
                       "%s: cannot read a PEM certificate (%s)", crt_path,
                       ssl_reason(e, sizeof e));
    b = BIO_new_file(key_path, "r");
    ca->key = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)
                        : NULL;
    BIO_free(b);
    if (ca->key == NULL)
        return pm_errf(err, errlen, PM_EIO,
                       "%s: cannot read an unencrypted PEM key (%s)", key_path,
                       ssl_reason(e, sizeof e));
    if (X509_check_ca(ca->crt) == 0) {
        ERR_clear_error();
        return pm_errf(err, errlen, PM_EINVAL, "%s is not a CA certificate",
                       crt_path);
    }
    if (X509_check_private_key(ca->crt, ca->key) != 1) {
        ERR_clear_error();
        return pm_errf(err, errlen, PM_EINVAL, "%s does not match %s", key_path,
                       crt_path);
    }
    return PM_OK;
}

/* Reuse dir's CA when ca.crt and ca.key are both there, else make one. */
static int
ca_get(const char *dir, struct pair *ca, FILE *out, char *err, size_t errlen)
{
    char *crt_path = pm_xasprintf("%s/ca.crt", dir);
    char *key_path = pm_xasprintf("%s/ca.key", dir);
    bool have_crt = false, have_key = false;
    int rv;

    rv = file_exists(crt_path, &have_crt, err, errlen);
    if (rv == PM_OK)
        rv = file_exists(key_path, &have_key, err, errlen);
    if (rv == PM_OK && have_crt != have_key)
        rv = pm_errf(err, errlen, PM_EINVAL,
                     "%s exists but %s does not (restore it, or remove both "
                     "to make a new CA)",
                     have_crt ? crt_path : key_path,
                     have_crt ? key_path : crt_path);
    if (rv == PM_OK && have_crt) {
        rv = ca_load(crt_path, key_path, ca, err, errlen);
        if (rv == PM_OK && out != NULL)
            fprintf(out, "reused %s and %s\n", crt_path, key_path);
    } else if (rv == PM_OK) {
        rv = issue(dir, "ca", CA_CN, ca_exts, NULL, NULL, CA_DAYS, ca, out, err,
                   errlen);
    }
    free(crt_path);
    free(key_path);
    return rv;
}

int
tunnel_gen_certs(const char *dir, const char *names, const char *clients,
                 int64_t days, FILE *out, char *err, size_t errlen)
{
    struct list nl = {NULL, 0}, cl = {NULL, 0};
    struct pair ca = {NULL, NULL};
    char *d = NULL, *san = NULL;
    size_t i, len;
    int rv;

    if (dir == NULL || *dir == '\0')
        return pm_errf(err, errlen, PM_EINVAL, "tunnel.gen_certs is empty");
    if (days < 1 || days > MAX_DAYS)
        return pm_errf(err, errlen, PM_EINVAL,
                       "tunnel.cert_days: %lld is not in 1..%d",
                       (long long)days, MAX_DAYS);
    rv = list_split(names, "tunnel.cert_names", &nl, err, errlen);
    if (rv == PM_OK)
        rv = names_check(&nl, &san, err, errlen);
    if (rv == PM_OK)
        rv = list_split(clients, "tunnel.cert_clients", &cl, err, errlen);
    if (rv == PM_OK)
        rv = clients_check(&cl, err, errlen);
    if (rv == PM_OK) {
        d = pm_xstrdup(dir);
        len = strlen(d);
        while (len > 1 && d[len - 1] == '/')
            d[--len] = '\0';
        rv = dir_make(d, err, errlen);
    }
    if (rv == PM_OK)
        rv = ca_get(d, &ca, out, err, errlen);
    if (rv == PM_OK)
        rv = issue(d, "server", nl.items[0], server_exts, san, &ca, days, NULL,
                   out, err, errlen);
    for (i = 0; rv == PM_OK && i < cl.n; i++)
        rv = issue(d, cl.items[i], cl.items[i], client_exts, NULL, &ca, days,
                   NULL, out, err, errlen);
    X509_free(ca.crt);
    EVP_PKEY_free(ca.key);
    list_free(&nl);
    list_free(&cl);
    free(san);
    free(d);
    return rv;
}
