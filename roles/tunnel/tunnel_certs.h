/*
 * tunnel_certs: the certificate generator of the tunnel role
 * (--tunnel.gen_certs). A private CA, the proxy's server certificate and
 * one client certificate per agent, ECDSA P-256 signed with SHA-256, in
 * PEM files of one directory (docs/tunnel.md, Certificates).
 */
#ifndef TUNNEL_CERTS_H
#define TUNNEL_CERTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Write a CA, a server certificate and client certificates into dir
 * (created 0700 if missing). names: comma list of DNS names for the server
 * cert (whitespace around items ignored); clients: comma list of client
 * names (each becomes NAME.crt/NAME.key, CN=NAME; a name must match
 * [A-Za-z0-9._-]+ and must not be "ca" or "server"); days: validity of the
 * leaves. Progress lines ("wrote certs/ca.crt") go to out. PM_OK, or
 * PM_EINVAL/PM_EIO with a one-line reason.
 */
int tunnel_gen_certs(const char *dir, const char *names, const char *clients,
                     int64_t days, FILE *out, char *err, size_t errlen);

#endif
