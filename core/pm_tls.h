/*
 * pm_tls: TLS contexts. The server context of the main port from PEM
 * files or PEM text (Mozilla "intermediate": TLS 1.2+ with ECDHE AEAD
 * suites, or 1.3 only), optional client-certificate verification (mTLS)
 * with a CRL and a leaf check of the role's, SSL_MODE_RELEASE_BUFFERS to
 * keep idle connections small, session tickets on; and client contexts
 * for outgoing mTLS with session resumption. SIGHUP rebuilds the
 * context; connections already open keep the one they started with.
 */
#ifndef PM_TLS_H
#define PM_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;
struct ssl_st;
struct x509_st;
struct pm_tls;

struct pm_tls_conf {
    const char *cert;          /* PEM file path, or NULL */
    const char *key;           /* PEM file path, or NULL */
    const char *cert_pem;      /* PEM text, or NULL */
    const char *key_pem;       /* PEM text, or NULL */
    const char *client_ca;     /* CA file for mTLS, or NULL */
    const char *client_ca_pem; /* CA PEM text for mTLS, or NULL */
    const char *crl;           /* PEM CRL file checked on peers, or NULL */
    const char *min_version;   /* "1.2" or "1.3" */
};

/*
 * A client context (outgoing mTLS): our certificate (cert/key or their
 * _pem forms, optional), the CAs that verify the server (client_ca or
 * client_ca_pem, required), crl and min_version as for a server.
 */
struct pm_tls *pm_tls_client_new(const struct pm_tls_conf *conf, char *err,
                                 size_t errlen);

/*
 * An extra check of the peer's leaf certificate during a full handshake,
 * after the chain verified: return false with a reason to refuse (the
 * handshake then fails with an alert). Runs on the loop thread.
 */
typedef bool (*pm_tls_check_fn)(void *arg, struct ssl_st *ssl,
                                struct x509_st *leaf, char *why, size_t whylen);
void pm_tls_set_check(struct pm_tls *tls, pm_tls_check_fn fn, void *arg);

/*
 * A new SSL for a connection of this context, not yet bound to a socket:
 * server side (accepting) for a server context; for a client context,
 * connecting with SNI and certificate name check for verify_name and the
 * last session the server gave us (resumption). NULL on failure.
 */
struct ssl_st *pm_tls_new_ssl(struct pm_tls *tls, const char *verify_name);
/* The first queued OpenSSL error as text ("unknown error" if none), and
 * clear the queue. */
const char *pm_tls_error_text(char *buf, size_t len);

/* True when the conf asks for TLS at all. */
bool pm_tls_wanted(const struct pm_tls_conf *conf);
/* Build a context; NULL with a reason in err on failure. */
struct pm_tls *pm_tls_new(const struct pm_tls_conf *conf, char *err,
                          size_t errlen);
/* Replace the context from conf; on failure the old one stays. */
int pm_tls_reload(struct pm_tls *tls, const struct pm_tls_conf *conf, char *err,
                  size_t errlen);
void pm_tls_free(struct pm_tls *tls);

/*
 * A server-side TLS bufferevent over fd (takes ownership of fd; with
 * BEV_OPT_CLOSE_ON_FREE it owns the SSL too). NULL on failure, fd closed.
 */
struct bufferevent *pm_tls_wrap(struct pm_tls *tls, struct event_base *base,
                                int fd);
/* Log and clear OpenSSL's error queue under event (for BEV errors). */
void pm_tls_log_errors(const char *event, unsigned long long conn_id);

#endif
