/*
 * pm_tls: server TLS for the main port. Builds the SSL_CTX from PEM
 * files or PEM text (Mozilla "intermediate": TLS 1.2+ with ECDHE AEAD
 * suites, or 1.3 only), optional client-certificate verification (mTLS),
 * SSL_MODE_RELEASE_BUFFERS to keep idle connections small, session
 * tickets on. SIGHUP rebuilds the context; connections already open keep
 * the one they started with. The only core module that touches libssl.
 */
#ifndef PM_TLS_H
#define PM_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;
struct pm_tls;

struct pm_tls_conf {
    const char *cert;        /* PEM file path, or NULL */
    const char *key;         /* PEM file path, or NULL */
    const char *cert_pem;    /* PEM text, or NULL */
    const char *key_pem;     /* PEM text, or NULL */
    const char *client_ca;   /* CA file for mTLS, or NULL */
    const char *min_version; /* "1.2" or "1.3" */
};

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
