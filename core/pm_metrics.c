/*
 * pm_metrics: metric series in a flat array (small: tens of series),
 * rendered in Prometheus text exposition format 0.0.4 grouped by name,
 * plus process_* metrics read from /proc at scrape time, and CloudWatch
 * EMF lines. Values are plain integers updated on the loop thread.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "pm_log.h"
#include "pm_metrics.h"
#include "pm_util.h"

enum kind { COUNTER, GAUGE, HISTOGRAM };

struct pm_histogram {
    double *bounds; /* upper bounds, ascending; +Inf is implied */
    uint64_t *counts;
    size_t n;
    double sum;
    uint64_t count;
};

struct series {
    enum kind kind;
    char *name, *labels, *help;
    union {
        uint64_t counter;
        int64_t gauge;
    } v;
    struct pm_histogram h;
};

struct pm_metrics {
    struct series **s;
    size_t n;
    uint64_t start_wall_ms;
};

struct pm_metrics *
pm_metrics_new(void)
{
    struct pm_metrics *m = pm_xcalloc(1, sizeof *m);

    m->start_wall_ms = pm_wall_ms();
    return m;
}

void
pm_metrics_free(struct pm_metrics *m)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->n; i++) {
        struct series *s = m->s[i];

        free(s->name);
        free(s->labels);
        free(s->help);
        free(s->h.bounds);
        free(s->h.counts);
        free(s);
    }
    free(m->s);
    free(m);
}

static struct series *
lookup(struct pm_metrics *m, enum kind kind, const char *name,
       const char *labels, const char *help)
{
    struct series *s;
    size_t i;

    for (i = 0; i < m->n; i++) {
        s = m->s[i];
        if (strcmp(s->name, name) == 0 &&
            strcmp(s->labels, labels ? labels : "") == 0) {
            PM_ASSERT(s->kind == kind);
            return s;
        }
    }
    s = pm_xcalloc(1, sizeof *s);
    s->kind = kind;
    s->name = pm_xstrdup(name);
    s->labels = pm_xstrdup(labels ? labels : "");
    s->help = pm_xstrdup(help ? help : "");
    m->s = pm_xrealloc(m->s, (m->n + 1) * sizeof *m->s);
    m->s[m->n++] = s;
    return s;
}

uint64_t *
pm_metrics_counter(struct pm_metrics *m, const char *name, const char *labels,
                   const char *help)
{
    return &lookup(m, COUNTER, name, labels, help)->v.counter;
}

int64_t *
pm_metrics_gauge(struct pm_metrics *m, const char *name, const char *labels,
                 const char *help)
{
    return &lookup(m, GAUGE, name, labels, help)->v.gauge;
}

struct pm_histogram *
pm_metrics_histogram(struct pm_metrics *m, const char *name, const char *labels,
                     const char *help, const double *bounds, size_t n)
{
    struct series *s = lookup(m, HISTOGRAM, name, labels, help);

    if (s->h.bounds == NULL) {
        s->h.bounds = pm_xmalloc(n * sizeof *s->h.bounds);
        memcpy(s->h.bounds, bounds, n * sizeof *bounds);
        s->h.counts = pm_xcalloc(n + 1, sizeof *s->h.counts);
        s->h.n = n;
    }
    return &s->h;
}

void
pm_histogram_observe(struct pm_histogram *h, double v)
{
    size_t i = 0;

    while (i < h->n && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

static void
render_histogram(struct evbuffer *out, const struct series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i <= s->h.n; i++) {
        cum += s->h.counts[i];
        if (i < s->h.n)
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name,
                                s->labels, sep, s->h.bounds[i],
                                (unsigned long long)cum);
        else
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n",
                                s->name, s->labels, sep,
                                (unsigned long long)cum);
    }
    if (s->labels[0]) {
        evbuffer_add_printf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n",
                            s->name, s->labels, s->h.sum, s->name, s->labels,
                            (unsigned long long)s->h.count);
    } else {
        evbuffer_add_printf(out, "%s_sum %.6f\n%s_count %llu\n", s->name,
                            s->h.sum, s->name, (unsigned long long)s->h.count);
    }
}

static void
render_series(struct evbuffer *out, const struct series *s)
{
    if (s->kind == HISTOGRAM) {
        render_histogram(out, s);
        return;
    }
    if (s->labels[0])
        evbuffer_add_printf(out, "%s{%s} ", s->name, s->labels);
    else
        evbuffer_add_printf(out, "%s ", s->name);
    if (s->kind == COUNTER)
        evbuffer_add_printf(out, "%llu\n", (unsigned long long)s->v.counter);
    else
        evbuffer_add_printf(out, "%lld\n", (long long)s->v.gauge);
}

/* utime+stime in seconds and RSS/VSZ in bytes from /proc/self. */
static void
proc_stats(double *cpu_s, long long *rss, long long *vsz)
{
    char buf[2048], *p;
    FILE *f;
    unsigned long ut = 0, st = 0;
    unsigned long long vsize = 0;
    long rss_pages = 0;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

    *cpu_s = 0;
    *rss = *vsz = 0;
    f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return;
    if (fgets(buf, sizeof buf, f) != NULL && (p = strrchr(buf, ')')) != NULL)
        /* fields after "comm)": state(3) ... utime(14) stime(15) ...
         * vsize(23) rss(24) */
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
               "%*d %*d %*d %*d %*u %llu %ld",
               &ut, &st, &vsize, &rss_pages);
    fclose(f);
    *cpu_s = (double)(ut + st) / (double)tick;
    *rss = (long long)rss_pages * page;
    *vsz = (long long)vsize;
}

static long
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    long n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own fd */
}

static void
render_process(struct pm_metrics *m, struct evbuffer *out)
{
    struct rlimit rl;
    double cpu;
    long long rss, vsz;

    proc_stats(&cpu, &rss, &vsz);
    getrlimit(RLIMIT_NOFILE, &rl);
    evbuffer_add_printf(
        out,
        "# HELP process_cpu_seconds_total User and system CPU time spent "
        "in seconds.\n# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total %.2f\n"
        "# HELP process_resident_memory_bytes Resident memory size in "
        "bytes.\n# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes %lld\n"
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n"
        "process_virtual_memory_bytes %lld\n"
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n"
        "# HELP process_max_fds Maximum number of open file descriptors.\n"
        "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n"
        "# HELP process_start_time_seconds Start time of the process since "
        "unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
        "process_start_time_seconds %.3f\n",
        cpu, rss, vsz, open_fds(), (unsigned long long)rl.rlim_cur,
        (double)m->start_wall_ms / 1000.0);
}

void
pm_metrics_render(struct pm_metrics *m, struct evbuffer *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    bool *done = pm_xcalloc(m->n ? m->n : 1, sizeof *done);
    size_t i, j;

    for (i = 0; i < m->n; i++) {
        if (done[i])
            continue;
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->s[i]->name,
                            m->s[i]->help, m->s[i]->name, types[m->s[i]->kind]);
        for (j = i; j < m->n; j++) {
            if (!done[j] && strcmp(m->s[j]->name, m->s[i]->name) == 0) {
                render_series(out, m->s[j]);
                done[j] = true;
            }
        }
    }
    free(done);
    render_process(m, out);
}

/* EMF metric name: name, or name.labelvalues for a labelled series. */
static char *
emf_name(const struct series *s)
{
    char lab[128];
    size_t i, n = 0;

    for (i = 0; s->labels[i] != '\0' && n + 1 < sizeof lab; i++) {
        char c = s->labels[i];

        if (c == '"')
            continue;
        lab[n++] = (c == '=' || c == ',') ? '_' : c;
    }
    lab[n] = '\0';
    return pm_xasprintf("%s%s%s", s->name, n ? "." : "", lab);
}

/* The envelope of an EMF line: the log fields, _aws with one directive
 * in namespace ns; *dims gets the dimension set, *mets the metric list. */
static cJSON *
emf_root(const char *ns, const char *role, cJSON **dims, cJSON **mets)
{
    cJSON *root = cJSON_CreateObject(), *aws, *cwm, *dir, *set;
    char ts[48];

    /* The fixed fields of every log line, so stdout stays uniform;
     * CloudWatch keeps them as properties of the EMF event. */
    pm_log_format_ts(ts, sizeof ts);
    cJSON_AddStringToObject(root, "ts", ts);
    cJSON_AddStringToObject(root, "level", "info");
    cJSON_AddStringToObject(root, "role", role);
    cJSON_AddStringToObject(root, "event", "metrics_emf");
    cJSON_AddStringToObject(root, "msg", "metrics");
    aws = cJSON_AddObjectToObject(root, "_aws");
    cJSON_AddNumberToObject(aws, "Timestamp", (double)pm_wall_ms());
    cwm = cJSON_AddArrayToObject(aws, "CloudWatchMetrics");
    dir = cJSON_CreateObject();
    cJSON_AddItemToArray(cwm, dir);
    cJSON_AddStringToObject(dir, "Namespace", ns);
    set = cJSON_CreateArray();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(dir, "Dimensions"), set);
    *dims = set;
    *mets = cJSON_AddArrayToObject(dir, "Metrics");
    return root;
}

static void
emf_metric(cJSON *root, cJSON *mets, const char *name, const char *unit,
           double v)
{
    cJSON *md = cJSON_CreateObject();

    cJSON_AddStringToObject(md, "Name", name);
    cJSON_AddStringToObject(md, "Unit", unit);
    cJSON_AddItemToArray(mets, md);
    cJSON_AddNumberToObject(root, name, v);
}

static void
emf_write(cJSON *root)
{
    char *line = cJSON_PrintUnformatted(root);

    cJSON_Delete(root);
    if (line != NULL) {
        pm_log_write_line(line);
        free(line);
    }
}

void
pm_metrics_emit_emf(struct pm_metrics *m, const char *ns, const char *role)
{
    cJSON *dims, *mets, *root = emf_root(ns, role, &dims, &mets);
    size_t i, count = 0;

    cJSON_AddItemToArray(dims, cJSON_CreateString("role"));
    /* CloudWatch takes at most 100 metrics per directive. */
    for (i = 0; i < m->n && count < 100; i++) {
        const struct series *s = m->s[i];
        char *name;

        if (s->kind == HISTOGRAM)
            continue; /* EMF carries counts; the scrape has the buckets */
        name = emf_name(s);
        emf_metric(root, mets, name, "Count",
                   s->kind == COUNTER ? (double)s->v.counter
                                      : (double)s->v.gauge);
        free(name);
        count++;
    }
    emf_write(root);
}

void
pm_metrics_emit_emf_values(const char *ns, const char *role,
                           const char *const *dims,
                           const struct pm_emf_value *v, size_t n)
{
    cJSON *set, *mets, *root = emf_root(ns, role, &set, &mets);
    size_t i;

    for (i = 0; dims != NULL && dims[i] != NULL && dims[i + 1] != NULL;
         i += 2) {
        cJSON_AddItemToArray(set, cJSON_CreateString(dims[i]));
        cJSON_AddStringToObject(root, dims[i], dims[i + 1]);
    }
    for (i = 0; i < n; i++)
        emf_metric(root, mets, v[i].name, v[i].unit, v[i].value);
    emf_write(root);
}
