/*
 * pm_probe: `p2pmesh --role=ROLE --probe[=PATH]`, the container health
 * check (Docker HEALTHCHECK, the ECS container healthCheck). It reads
 * the same configuration as the server and asks that server, on this
 * machine, what a load balancer asks: one GET of /health (or PATH) on
 * the admin port when there is one, else the main port (TLS there is
 * spoken without checking the certificate: the peer is this machine).
 * Healthy is a 200 within the timeout.
 */
#ifndef PM_PROBE_H
#define PM_PROBE_H

#include <stddef.h>

#include "pm_config.h"
#include "pm_role.h"
#include "pm_server.h"

#define PM_PROBE_TIMEOUT_MS 5000

/*
 * Probe the server cfg/conf describe. PM_OK when it answered 200 (msg:
 * "200 from URL"); PM_ENOTFOUND when the role has no listener (msg says
 * so; nothing to probe); otherwise an error with msg the reason (the
 * status and the start of the body, or why there was no answer). path
 * NULL: /health. Blocks for at most PM_PROBE_TIMEOUT_MS.
 */
int pm_probe_run(const struct pm_role *role, const struct pm_config *cfg,
                 const struct pm_core_conf *conf, const void *role_conf,
                 const char *path, char *msg, size_t msglen);

#endif
