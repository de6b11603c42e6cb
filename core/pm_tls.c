/*
 * pm_tls: the server SSL_CTX. Mozilla "intermediate" (TLS 1.2 with ECDHE
 * AEAD suites, TLS 1.3) or "modern" (tls.min_version = 1.3), no
 * renegotiation, session tickets on, SSL_MODE_RELEASE_BUFFERS so an idle
 * TLS connection keeps ~15 KB instead of ~47 KB. A reload builds a whole
 * new context and swaps it in only when it is complete; SSL objects hold
 * a reference to the context they were made from.
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
};

bool
pm_tls_wanted(const struct pm_tls_conf *conf)
{
    return conf->cert != NULL || conf->key != NULL || conf->cert_pem != NULL ||
           conf->key_pem != NULL;
}

/* The first queued OpenSSL error as text, and clear the queue. */
static const char *
ssl_error_text(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

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
                       ssl_error_text(e, sizeof e));
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
                       ssl_error_text(e, sizeof e));
    }
    EVP_PKEY_free(pk);
    return PM_OK;
}

static SSL_CTX *
build_ctx(const struct pm_tls_conf *conf, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    bool tls13 = conf->min_version && strcmp(conf->min_version, "1.3") == 0;
    char e[256];

    if (ctx == NULL) {
        pm_errf(err, errlen, PM_EIO, "SSL_CTX_new: %s",
                ssl_error_text(e, sizeof e));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, tls12_ciphers);
    SSL_CTX_set_ciphersuites(ctx, tls13_suites);
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);

    if (conf->cert_pem != NULL || conf->key_pem != NULL) {
        if (conf->cert_pem == NULL || conf->key_pem == NULL) {
            pm_errf(err, errlen, PM_EINVAL,
                    "tls.cert_pem and tls.key_pem must be set together");
            goto fail;
        }
        if (load_pem_text(ctx, conf->cert_pem, conf->key_pem, err, errlen) !=
            PM_OK)
            goto fail;
    } else {
        if (conf->cert == NULL || conf->key == NULL) {
            pm_errf(err, errlen, PM_EINVAL,
                    "tls.cert and tls.key must be set together");
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, conf->cert) != 1) {
            pm_errf(err, errlen, PM_EINVAL, "tls.cert %s: %s", conf->cert,
                    ssl_error_text(e, sizeof e));
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, conf->key, SSL_FILETYPE_PEM) !=
            1) {
            pm_errf(err, errlen, PM_EINVAL, "tls.key %s: %s", conf->key,
                    ssl_error_text(e, sizeof e));
            goto fail;
        }
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        pm_errf(err, errlen, PM_EINVAL,
                "the TLS private key does not match the certificate");
        goto fail;
    }
    if (conf->client_ca != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(conf->client_ca);

        if (names == NULL ||
            SSL_CTX_load_verify_locations(ctx, conf->client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            pm_errf(err, errlen, PM_EINVAL, "tls.client_ca %s: %s",
                    conf->client_ca, ssl_error_text(e, sizeof e));
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct pm_tls *
pm_tls_new(const struct pm_tls_conf *conf, char *err, size_t errlen)
{
    SSL_CTX *ctx = build_ctx(conf, err, errlen);
    struct pm_tls *tls;

    if (ctx == NULL)
        return NULL;
    tls = pm_xcalloc(1, sizeof *tls);
    tls->ctx = ctx;
    return tls;
}

int
pm_tls_reload(struct pm_tls *tls, const struct pm_tls_conf *conf, char *err,
              size_t errlen)
{
    SSL_CTX *ctx = build_ctx(conf, err, errlen);

    if (ctx == NULL)
        return PM_EINVAL;
    SSL_CTX_free(tls->ctx);
    tls->ctx = ctx;
    return PM_OK;
}

void
pm_tls_free(struct pm_tls *tls)
{
    if (tls == NULL)
        return;
    SSL_CTX_free(tls->ctx);
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
