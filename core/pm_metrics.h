/*
 * pm_metrics: a registry of counters, gauges and histograms rendered as
 * Prometheus text (with process metrics from /proc) and, when
 * metrics.emf is on, as CloudWatch Embedded Metric Format lines.
 * Series are created once and updated through the returned pointer, so
 * hot paths pay one increment. Loop thread only.
 */
#ifndef PM_METRICS_H
#define PM_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct pm_metrics;

struct pm_metrics *pm_metrics_new(void);
void pm_metrics_free(struct pm_metrics *m);

/*
 * Get or create a series. name is the full metric name
 * (p2pmesh_signaling_joins_total), labels the label text without braces
 * (code="1000") or NULL, help one line. All strings are copied. The
 * pointer stays valid for the registry's lifetime.
 */
uint64_t *pm_metrics_counter(struct pm_metrics *m, const char *name,
                             const char *labels, const char *help);
int64_t *pm_metrics_gauge(struct pm_metrics *m, const char *name,
                          const char *labels, const char *help);
/*
 * A histogram series with fixed upper bounds (ascending, copied; +Inf is
 * added). Observe values in the unit of the name (seconds).
 */
struct pm_histogram;
struct pm_histogram *pm_metrics_histogram(struct pm_metrics *m,
                                          const char *name, const char *labels,
                                          const char *help,
                                          const double *bounds, size_t n);
void pm_histogram_observe(struct pm_histogram *h, double v);
/* Append every series, then process_* metrics, in Prometheus text. */
void pm_metrics_render(struct pm_metrics *m, struct evbuffer *out);
/*
 * Print one CloudWatch EMF JSON line to stdout with every counter and
 * gauge under namespace, dimension role.
 */
void pm_metrics_emit_emf(struct pm_metrics *m, const char *ns,
                         const char *role);

/* One named EMF value (Unit as CloudWatch spells it: Count, Seconds). */
struct pm_emf_value {
    const char *name;
    const char *unit;
    double value;
};
/*
 * One EMF line of the given values in namespace ns, with dimensions
 * dims: name, value, name, value, ..., NULL (the seed metrics of a role,
 * e.g. Fluidity's ActiveConnections by ServiceName and ClusterName).
 */
void pm_metrics_emit_emf_values(const char *ns, const char *role,
                                const char *const *dims,
                                const struct pm_emf_value *v, size_t n);

#endif
