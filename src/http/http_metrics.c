/* http: counters, gauges and fixed-bucket histograms rendered in the
 * Prometheus text exposition format (version 0.0.4). */
#include "http/http_int.h"

#include <math.h>
#include <string.h>

void mr_http_metrics_init(struct mr_http_metrics *m)
{
    m->head = NULL;
    m->tail = NULL;
}

static void metric_free(struct mr_http_metric *x)
{
    mr_free(x->name);
    mr_free(x->labels);
    mr_free(x->help);
    mr_free(x->bounds);
    mr_free(x->buckets);
    mr_free(x);
}

void mr_http_metrics_close(struct mr_http_metrics *m)
{
    struct mr_http_metric *x = m->head, *next;
    while (x != NULL) {
        next = x->next;
        metric_free(x);
        x = next;
    }
    mr_http_metrics_init(m);
}

static int name_is_valid(const char *s)
{
    size_t i;
    if (s == NULL || s[0] == '\0') return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

static struct mr_http_metric *add(struct mr_http_metrics *m, enum mr_http_metric_type type,
                                  const char *name, const char *labels, const char *help,
                                  const double *bounds, unsigned nbounds)
{
    struct mr_http_metric *x, *first = NULL, *last = NULL;
    unsigned i;
    if (labels == NULL) labels = "";
    if (!name_is_valid(name)) return NULL;
    if (type == MR_HTTP_HISTOGRAM) {
        if (bounds == NULL || nbounds == 0) return NULL;
        for (i = 0; i < nbounds; i++) {
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) return NULL;
        }
    }
    for (x = m->head; x != NULL; x = x->next) {
        if (strcmp(x->name, name) != 0) continue;
        if (first == NULL) first = x;
        last = x;
        if (x->type != type || strcmp(x->labels, labels) == 0) return NULL;
        if (type == MR_HTTP_HISTOGRAM &&
            (x->nbounds != nbounds ||
             memcmp(x->bounds, bounds, nbounds * sizeof *bounds) != 0)) {
            return NULL;
        }
    }
    x = mr_calloc(1, sizeof *x);
    if (x == NULL) return NULL;
    x->type = type;
    x->name = mr_strdup(name);
    x->labels = mr_strdup(labels);
    if (x->name == NULL || x->labels == NULL) goto oom;
    if (first == NULL) {
        x->help = mr_strdup(help != NULL ? help : "");
        if (x->help == NULL) goto oom;
    }
    if (type == MR_HTTP_HISTOGRAM) {
        x->nbounds = nbounds;
        x->bounds = mr_malloc(nbounds * sizeof *bounds);
        x->buckets = mr_calloc(nbounds, sizeof *x->buckets);
        if (x->bounds == NULL || x->buckets == NULL) goto oom;
        memcpy(x->bounds, bounds, nbounds * sizeof *bounds);
    }
    /* Keep families together: a new series of a known name goes right after
     * the family's last series, so rendering walks the list once. */
    if (last != NULL) {
        x->next = last->next;
        last->next = x;
        last->family_next = x;
        if (m->tail == last) m->tail = x;
    } else {
        if (m->tail != NULL) {
            m->tail->next = x;
        } else {
            m->head = x;
        }
        m->tail = x;
    }
    return x;
oom:
    metric_free(x);
    return NULL;
}

struct mr_http_metric *mr_http_metrics_counter(struct mr_http_metrics *m,
                                               const char *name, const char *labels,
                                               const char *help)
{
    return add(m, MR_HTTP_COUNTER, name, labels, help, NULL, 0);
}

struct mr_http_metric *mr_http_metrics_gauge(struct mr_http_metrics *m, const char *name,
                                             const char *labels, const char *help)
{
    return add(m, MR_HTTP_GAUGE, name, labels, help, NULL, 0);
}

struct mr_http_metric *mr_http_metrics_histogram(struct mr_http_metrics *m,
                                                 const char *name, const char *labels,
                                                 const char *help, const double *bounds,
                                                 unsigned nbounds)
{
    return add(m, MR_HTTP_HISTOGRAM, name, labels, help, bounds, nbounds);
}

void mr_http_metric_add(struct mr_http_metric *x, double v)
{
    MR_ASSERT(x->type != MR_HTTP_HISTOGRAM);
    MR_ASSERT(x->type != MR_HTTP_COUNTER || v >= 0);
    x->value += v;
}

void mr_http_metric_set(struct mr_http_metric *x, double v)
{
    MR_ASSERT(x->type == MR_HTTP_GAUGE);
    x->value = v;
}

void mr_http_metric_observe(struct mr_http_metric *x, double v)
{
    unsigned lo = 0, hi;
    MR_ASSERT(x->type == MR_HTTP_HISTOGRAM);
    /* Binary search for the first bound >= v; NaN counts only in +Inf. */
    hi = x->nbounds;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (x->bounds[mid] >= v) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if (!isnan(v) && lo < x->nbounds) x->buckets[lo]++;
    x->sum += v;
    x->count++;
}

static void put_number(struct mr_http_buf *b, double v)
{
    char tmp[40];
    if (isnan(v)) {
        mr_http_buf_puts(b, "NaN");
    } else if (isinf(v)) {
        mr_http_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    } else {
        mr_http__fmt_double(tmp, sizeof tmp, v);
        mr_http_buf_puts(b, tmp);
    }
}

static void put_help(struct mr_http_buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\') {
            mr_http_buf_puts(b, "\\\\");
        } else if (*s == '\n') {
            mr_http_buf_puts(b, "\\n");
        } else {
            mr_http_buf_append(b, s, 1);
        }
    }
}

/* name + suffix + {labels[,extra]} */
static void put_series(struct mr_http_buf *b, const struct mr_http_metric *x,
                       const char *suffix, const char *extra)
{
    int has_labels = x->labels[0] != '\0';
    mr_http_buf_puts(b, x->name);
    mr_http_buf_puts(b, suffix);
    if (has_labels || extra != NULL) {
        mr_http_buf_puts(b, "{");
        mr_http_buf_puts(b, x->labels);
        if (has_labels && extra != NULL) mr_http_buf_puts(b, ",");
        if (extra != NULL) mr_http_buf_puts(b, extra);
        mr_http_buf_puts(b, "}");
    }
    mr_http_buf_puts(b, " ");
}

int mr_http_metrics_render(const struct mr_http_metrics *m, struct mr_http_buf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    const struct mr_http_metric *x;
    for (x = m->head; x != NULL; x = x->next) {
        if (x->help != NULL) { /* first series of its family */
            mr_http_buf_printf(out, "# HELP %s ", x->name);
            put_help(out, x->help);
            mr_http_buf_printf(out, "\n# TYPE %s %s\n", x->name, types[x->type]);
        }
        if (x->type != MR_HTTP_HISTOGRAM) {
            put_series(out, x, "", NULL);
            put_number(out, x->value);
            mr_http_buf_puts(out, "\n");
        } else {
            uint64_t cum = 0;
            unsigned i;
            char le[64];
            for (i = 0; i <= x->nbounds; i++) {
                if (i < x->nbounds) {
                    char num[40];
                    mr_http__fmt_double(num, sizeof num, x->bounds[i]);
                    snprintf(le, sizeof le, "le=\"%s\"", num);
                    cum += x->buckets[i];
                } else {
                    snprintf(le, sizeof le, "le=\"+Inf\"");
                    cum = x->count;
                }
                put_series(out, x, "_bucket", le);
                mr_http_buf_printf(out, "%llu\n", (unsigned long long)cum);
            }
            put_series(out, x, "_sum", NULL);
            put_number(out, x->sum);
            mr_http_buf_puts(out, "\n");
            put_series(out, x, "_count", NULL);
            mr_http_buf_printf(out, "%llu\n", (unsigned long long)x->count);
        }
    }
    return out->is_oom ? MR_ENOMEM : 0;
}
