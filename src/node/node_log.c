/* node_log: one line per event: "2026-11-22T22:40:01.123Z n1 INFO leader elected ..."
 * Only src/node logs (STYLE 6). Tokens and secrets are never passed here. */
#include "node/node_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static int min_level = MR_LOG_INFO;
static char log_id[72] = "-";

void mr_node_log_setup(const char *id, int level)
{
    snprintf(log_id, sizeof log_id, "%s", id ? id : "-");
    min_level = level;
}

int mr_node_log_level_parse(const char *s)
{
    int i;
    for (i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) return i;
    }
    return MR_LOG_INFO;
}

void mr_node_log(int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;
    if (level < min_level) return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %-5s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, log_id, level_names[level]);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}
