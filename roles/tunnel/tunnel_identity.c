/*
 * tunnel_identity: who is at the other end of an mTLS connection. The
 * subject CN for logs, SPKI pins in curl's "sha256//BASE64" form, and the
 * leaf check pm_tls runs during a full handshake: in server mode the
 * client certificate must pass tunnel.allow_cn / tunnel.allow_san (either
 * one, when any is set) and tunnel.allow_pin (when set); on the agent
 * the server key must match tunnel.server_pin (when set).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pm_util.h"
#include "tunnel.h"

#define PIN_PREFIX "sha256//"

void
tunnel_identity_cn(X509 *x, char *out, size_t outlen)
{
    out[0] = '\0';
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out,
                                  (int)outlen) < 0)
        out[0] = '\0';
}

void
tunnel_identity_pin(X509 *x, char *out, size_t outlen)
{
    unsigned char *der = NULL, md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    unsigned char b64[64];
    int n = i2d_PUBKEY(X509_get0_pubkey(x), &der);

    out[0] = '\0';
    if (n <= 0)
        return;
    EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    EVP_EncodeBlock(b64, md, (int)mdlen);
    snprintf(out, outlen, PIN_PREFIX "%s", (const char *)b64);
}

int
tunnel_pins_valid(const char *list, const char *key, char *err, size_t errlen)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);

        while (*p == ' ')
            p++;
        while (e > p && e[-1] == ' ')
            e--;
        /* sha256// and 44 base64 characters (32 bytes) */
        if (e > p && ((size_t)(e - p) != strlen(PIN_PREFIX) + 44 ||
                      strncmp(p, PIN_PREFIX, strlen(PIN_PREFIX)) != 0))
            return pm_errf(err, errlen, PM_EINVAL,
                           "%s: expected sha256//BASE64 pins (as curl "
                           "--pinnedpubkey), got '%.*s'",
                           key, (int)(e - p), p);
        p = comma ? comma + 1 : NULL;
    }
    return PM_OK;
}

static bool
list_set(const char *list)
{
    return list != NULL && list[strspn(list, " ,")] != '\0';
}

/* One of the certificate's DNS, URI or email SANs is in list. */
static bool
san_listed(X509 *x, const char *list)
{
    GENERAL_NAMES *names =
        X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    int i;

    for (i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && !found;
         i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const ASN1_IA5STRING *s;

        if (g->type == GEN_DNS)
            s = g->d.dNSName;
        else if (g->type == GEN_URI)
            s = g->d.uniformResourceIdentifier;
        else if (g->type == GEN_EMAIL)
            s = g->d.rfc822Name;
        else
            continue;
        found = pm_list_has(list, (const char *)ASN1_STRING_get0_data(s),
                            (size_t)ASN1_STRING_length(s));
    }
    GENERAL_NAMES_free(names);
    return found;
}

static bool
pin_listed(X509 *x, const char *list, char *pin, size_t pinlen)
{
    tunnel_identity_pin(x, pin, pinlen);
    return pin[0] != '\0' && pm_list_has(list, pin, strlen(pin));
}

bool
tunnel_identity_check(void *arg, SSL *ssl, X509 *leaf, char *why, size_t whylen)
{
    const struct tunnel *t = arg;
    const struct tunnel_conf *tc = &t->conf;
    char cn[128], pin[80];

    (void)ssl;
    if (t->agent) {
        if (list_set(tc->server_pin) &&
            !pin_listed(leaf, tc->server_pin, pin, sizeof pin)) {
            snprintf(why, whylen,
                     "the server key %s is not in tunnel.server_pin", pin);
            return false;
        }
        return true;
    }
    tunnel_identity_cn(leaf, cn, sizeof cn);
    if ((list_set(tc->allow_cn) || list_set(tc->allow_san)) &&
        !(list_set(tc->allow_cn) &&
          pm_list_has(tc->allow_cn, cn, strlen(cn))) &&
        !(list_set(tc->allow_san) && san_listed(leaf, tc->allow_san))) {
        snprintf(why, whylen,
                 "client certificate CN=%s is not in tunnel.allow_cn or "
                 "tunnel.allow_san",
                 cn);
        return false;
    }
    if (list_set(tc->allow_pin) &&
        !pin_listed(leaf, tc->allow_pin, pin, sizeof pin)) {
        snprintf(why, whylen,
                 "client certificate CN=%s key %s is not in tunnel.allow_pin",
                 cn, pin);
        return false;
    }
    return true;
}
