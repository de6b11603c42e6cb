/*
 * pm_addr: client addresses. Text form of socket addresses, CIDR lists
 * (limits.trusted_proxies) and the X-Forwarded-For rule: when the socket
 * peer is a trusted proxy, the client is the rightmost address in the
 * header that is not itself a trusted proxy.
 */
#ifndef PM_ADDR_H
#define PM_ADDR_H

#include <stdbool.h>
#include <stddef.h>

struct sockaddr;

#define PM_ADDR_STRLEN 46 /* INET6_ADDRSTRLEN */

struct pm_cidr_list;

/* Text form of an IPv4/IPv6 socket address (IPv4-mapped shown as v4). */
void pm_addr_format(const struct sockaddr *sa, char out[PM_ADDR_STRLEN]);

/* Parse "10.0.0.0/8, 2001:db8::/32, 192.0.2.7"; NULL/empty = empty list. */
int pm_cidr_list_parse(const char *text, struct pm_cidr_list **out, char *err,
                       size_t errlen);
void pm_cidr_list_free(struct pm_cidr_list *l);
bool pm_cidr_list_contains(const struct pm_cidr_list *l, const char *ip);
bool pm_cidr_list_empty(const struct pm_cidr_list *l);

/*
 * Resolve the client address: peer is the socket address text, xff the
 * X-Forwarded-For value (not NUL-ended, may be NULL). Writes the result
 * into out.
 */
void pm_addr_client(const struct pm_cidr_list *trusted, const char *peer,
                    const char *xff, size_t xff_len, char out[PM_ADDR_STRLEN]);

#endif
