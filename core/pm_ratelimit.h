/*
 * pm_ratelimit: token buckets and the per-client-IP table that enforces
 * limits.per_ip_connections and limits.per_ip_rate. Buckets start full;
 * a rate of count/per refills count tokens per per milliseconds up to
 * burst. Loop thread only.
 */
#ifndef PM_RATELIMIT_H
#define PM_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "pm_config.h"

struct pm_bucket {
    double tokens;
    uint64_t last_ms;
};

void pm_bucket_init(struct pm_bucket *b, uint32_t burst, uint64_t now_ms);
/* Take one token; false when empty (rate 0 means unlimited). */
bool pm_bucket_take(struct pm_bucket *b, const struct pm_rate *r,
                    uint32_t burst, uint64_t now_ms);

struct pm_iptable;

struct pm_iptable *pm_iptable_new(void);
void pm_iptable_free(struct pm_iptable *t);
/* Count one more connection for ip; PM_ELIMIT if max (0 = no cap) held. */
int pm_iptable_conn_acquire(struct pm_iptable *t, const char *ip, uint32_t max);
void pm_iptable_conn_release(struct pm_iptable *t, const char *ip);
/* Take one request token for ip from a bucket of r (burst = r->count). */
bool pm_iptable_rate_take(struct pm_iptable *t, const char *ip,
                          const struct pm_rate *r, uint64_t now_ms);
/* Drop entries with no connections whose bucket has refilled. */
void pm_iptable_sweep(struct pm_iptable *t, const struct pm_rate *r,
                      uint64_t now_ms);

#endif
