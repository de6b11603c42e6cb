/*
 * pm_tls: server and client SSL_CTX. Mozilla "intermediate" (TLS 1.2 with
 * ECDHE AEAD suites, TLS 1.3) or "modern" (tls.min_version = 1.3), no
 * renegotiation, session tickets on, SSL_MODE_RELEASE_BUFFERS so an idle
 * TLS connection keeps ~15 KB instead of ~47 KB. Peer verification: CA
 * file or PEM text, an optional CRL, then the owner's leaf check. A
 * client context remembers the newest session for resumption. A reload
 * builds a whole new context and swaps it in only when it is complete;
 * SSL objects hold a reference to the context they were made from.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "pm_log.h"
#include "pm_tls.h"
#include "pm_util.h"

static const char tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
    "TLS_CHACHA20_POLY1305_SHA256";

struct pm_tls {
    SSL_CTX *ctx;
    bool client;
    SSL_SESSION *session; /* client: the latest ticket, for resumption */
    pm_tls_check_fn check;
    void *check_arg;
};

static const unsigned char sid_ctx[] = "p2pmesh";

bool
pm_tls_wanted(const struct pm_tls_conf *conf)
{
    return conf->cert != NULL || conf->key != NULL || conf->cert_pem != NULL ||
           conf->key_pem != NULL;
}

const char *
pm_tls_error_text(char *buf, size_t len)
{
    unsigned long e = ERR_peek_error(); /* the first: the root cause */

    if (e == 0)
        pm_strlcpy(buf, "unknown error", len);
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static int
load_pem_text(SSL_CTX *ctx, const char *cert_pem, const char *key_pem,
              char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL), *chain;
    EVP_PKEY *pk;
    char e[256];

    if (x == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
        X509_free(x);
        BIO_free(b);
        return pm_errf(err, errlen, PM_EINVAL, "tls.cert_pem: %s",
                       pm_tls_error_text(e, sizeof e));
    }
    X509_free(x);
    while ((chain = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, chain) != 1) {
            X509_free(chain);
            break;
        }
    }
    ERR_clear_error(); /* end of the chain reads as an error */
    BIO_free(b);
    b = BIO_new_mem_buf(key_pem, -1);
    pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (pk == NULL || SSL_CTX_use_PrivateKey(ctx, pk) != 1) {
        EVP_PKEY_free(pk);
        return pm_errf(err, errlen, PM_EINVAL, "tls.key_pem: %s",
                       pm_tls_error_text(e, sizeof e));
    }
    EVP_PKEY_free(pk);
    return PM_OK;
}

/* Add every certificate of PEM text to store; the names to names. */
static int
load_ca_pem(X509_STORE *store, STACK_OF(X509_NAME) * names, const char *pem,
            char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x;
    int n = 0;

    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, x);
        if (names != NULL)
            sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(x)));
        X509_free(x);
        n++;
    }
    ERR_clear_error(); /* the end of the text reads as an error */
    BIO_free(b);
    if (n == 0)
        return pm_errf(err, errlen, PM_EINVAL,
                       "tls.client_ca_pem: no PEM certificate found");
    return PM_OK;
}

static int
load_crl(X509_STORE *store, const char *path, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "r");
    X509_CRL *crl;
    int n = 0;
    char e[256];

    if (b == NULL)
        return pm_errf(err, errlen, PM_EINVAL, "tls.crl %s: %s", path,
                       pm_tls_error_text(e, sizeof e));
    while ((crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_crl(store, crl);
        X509_CRL_free(crl);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    if (n == 0)
        return pm_errf(err, errlen, PM_EINVAL, "tls.crl %s: no PEM CRL found",
                       path);
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    return PM_OK;
}

/* The verify callback: the chain's verdict, then the role's check. */
static int
verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl;
    struct pm_tls *tls;
    char why[256] = "";

    if (!ok || X509_STORE_CTX_get_error_depth(x) != 0)
        return ok;
    ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (tls == NULL)
        return 0; /* its owner freed it: refuse rather than skip the check */
    if (tls->check == NULL)
        return ok;
    if (tls->check(tls->check_arg, ssl, X509_STORE_CTX_get_current_cert(x), why,
                   sizeof why))
        return 1;
    pm_log(PM_LOG_INFO, "tls_peer_refused", "%s", why);
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/* Client contexts keep the newest session the server handed out. */
static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct pm_tls *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    if (tls == NULL)
        return 0;
    SSL_SESSION_free(tls->session);
    tls->session = sess;
    return 1; /* we keep the reference */
}

/* Our certificate and key, from files or PEM text. */
static int
load_identity(SSL_CTX *ctx, const struct pm_tls_conf *conf, char *err,
              size_t errlen)
{
    char e[256];

    if (conf->cert_pem != NULL || conf->key_pem != NULL) {
        if (conf->cert_pem == NULL || conf->key_pem == NULL)
            return pm_errf(err, errlen, PM_EINVAL,
                           "tls.cert_pem and tls.key_pem must be set together");
        if (load_pem_text(ctx, conf->cert_pem, conf->key_pem, err, errlen) !=
            PM_OK)
            return PM_EINVAL;
    } else {
        if (conf->cert == NULL || conf->key == NULL)
            return pm_errf(err, errlen, PM_EINVAL,
                           "tls.cert and tls.key must be set together");
        if (SSL_CTX_use_certificate_chain_file(ctx, conf->cert) != 1)
            return pm_errf(err, errlen, PM_EINVAL, "tls.cert %s: %s",
                           conf->cert, pm_tls_error_text(e, sizeof e));
        if (SSL_CTX_use_PrivateKey_file(ctx, conf->key, SSL_FILETYPE_PEM) != 1)
            return pm_errf(err, errlen, PM_EINVAL, "tls.key %s: %s", conf->key,
                           pm_tls_error_text(e, sizeof e));
    }
    if (SSL_CTX_check_private_key(ctx) != 1)
        return pm_errf(err, errlen, PM_EINVAL,
                       "the TLS private key does not match the certificate");
    return PM_OK;
}

/* The CAs that verify the peer, and the CRL. */
static int
load_trust(SSL_CTX *ctx, const struct pm_tls_conf *conf, bool server, char *err,
           size_t errlen)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    char e[256];

    if (conf->client_ca_pem != NULL) {
        STACK_OF(X509_NAME) *names = server ? sk_X509_NAME_new_null() : NULL;

        if (load_ca_pem(store, names, conf->client_ca_pem, err, errlen) !=
            PM_OK) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            return PM_EINVAL;
        }
        if (server)
            SSL_CTX_set_client_CA_list(ctx, names);
    } else {
        STACK_OF(X509_NAME) *names =
            server ? SSL_load_client_CA_file(conf->client_ca) : NULL;

        if ((server && names == NULL) ||
            SSL_CTX_load_verify_locations(ctx, conf->client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            return pm_errf(err, errlen, PM_EINVAL, "tls.client_ca %s: %s",
                           conf->client_ca, pm_tls_error_text(e, sizeof e));
        }
        if (server)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (conf->crl != NULL && load_crl(store, conf->crl, err, errlen) != PM_OK)
        return PM_EINVAL;
    SSL_CTX_set_verify(ctx,
                       server
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_PEER,
                       verify_cb);
    return PM_OK;
}

static SSL_CTX *
build_ctx(const struct pm_tls_conf *conf, bool client, char *err, size_t errlen)
{
    SSL_CTX *ctx =
        SSL_CTX_new(client ? TLS_client_method() : TLS_server_method());
    bool tls13 = conf->min_version && strcmp(conf->min_version, "1.3") == 0;
    bool trust = conf->client_ca != NULL || conf->client_ca_pem != NULL;
    char e[256];

    if (ctx == NULL) {
        pm_errf(err, errlen, PM_EIO, "SSL_CTX_new: %s",
                pm_tls_error_text(e, sizeof e));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, tls12_ciphers);
    SSL_CTX_set_ciphersuites(ctx, tls13_suites);
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (client) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        /* Resumption with client certificates needs a session context. */
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    }
    if ((!client || pm_tls_wanted(conf)) &&
        load_identity(ctx, conf, err, errlen) != PM_OK)
        goto fail;
    if (client && !trust) {
        pm_errf(err, errlen, PM_EINVAL,
                "a CA to verify the server is required (tls.client_ca)");
        goto fail;
    }
    if (trust && load_trust(ctx, conf, !client, err, errlen) != PM_OK)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static struct pm_tls *
tls_new(const struct pm_tls_conf *conf, bool client, char *err, size_t errlen)
{
    SSL_CTX *ctx = build_ctx(conf, client, err, errlen);
    struct pm_tls *tls;

    if (ctx == NULL)
        return NULL;
    tls = pm_xcalloc(1, sizeof *tls);
    tls->ctx = ctx;
    tls->client = client;
    SSL_CTX_set_app_data(ctx, tls);
    return tls;
}

struct pm_tls *
pm_tls_new(const struct pm_tls_conf *conf, char *err, size_t errlen)
{
    return tls_new(conf, false, err, errlen);
}

struct pm_tls *
pm_tls_client_new(const struct pm_tls_conf *conf, char *err, size_t errlen)
{
    return tls_new(conf, true, err, errlen);
}

int
pm_tls_reload(struct pm_tls *tls, const struct pm_tls_conf *conf, char *err,
              size_t errlen)
{
    SSL_CTX *ctx = build_ctx(conf, tls->client, err, errlen);

    if (ctx == NULL)
        return PM_EINVAL;
    /* SSL objects keep a reference to the context they were made from;
     * it still points here, so their checks use the current settings. */
    SSL_CTX_free(tls->ctx);
    tls->ctx = ctx;
    SSL_CTX_set_app_data(ctx, tls);
    SSL_SESSION_free(tls->session);
    tls->session = NULL;
    return PM_OK;
}

void
pm_tls_set_check(struct pm_tls *tls, pm_tls_check_fn fn, void *arg)
{
    tls->check = fn;
    tls->check_arg = arg;
}

SSL *
pm_tls_new_ssl(struct pm_tls *tls, const char *verify_name)
{
    SSL *ssl = SSL_new(tls->ctx);

    if (ssl == NULL)
        return NULL;
    if (!tls->client) {
        SSL_set_accept_state(ssl);
        return ssl;
    }
    SSL_set_connect_state(ssl);
    if (verify_name != NULL) {
        SSL_set_tlsext_host_name(ssl, verify_name);
        if (SSL_set1_host(ssl, verify_name) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    if (tls->session != NULL)
        SSL_set_session(ssl, tls->session);
    return ssl;
}

void
pm_tls_free(struct pm_tls *tls)
{
    if (tls == NULL)
        return;
    SSL_CTX_set_app_data(tls->ctx, NULL);
    SSL_CTX_free(tls->ctx);
    SSL_SESSION_free(tls->session);
    free(tls);
}

struct bufferevent *
pm_tls_wrap(struct pm_tls *tls, struct event_base *base, int fd)
{
    SSL *ssl = SSL_new(tls->ctx);
    struct bufferevent *bev;

    if (ssl == NULL) {
        close(fd);
        return NULL;
    }
    /* On failure libevent 2.1 frees ssl but leaves fd to us. */
    bev = bufferevent_openssl_socket_new(
        base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void
pm_tls_log_errors(const char *event, unsigned long long conn_id)
{
    unsigned long e;
    char buf[256], id[24];

    snprintf(id, sizeof id, "%llu", conn_id);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        pm_log_kv(PM_LOG_DEBUG, event, buf, "lib", "openssl", "conn", id, NULL);
    }
}
