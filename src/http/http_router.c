/* http: a table-driven router with 404 and 405 (+ Allow) answers. */
#include "http/http_int.h"

#include <stdio.h>
#include <string.h>

static int path_matches(const struct mr_http_route *rt, const struct mr_http_request *req)
{
    size_t n = strlen(rt->path);
    if (rt->is_prefix) return req->path_len >= n && memcmp(req->path, rt->path, n) == 0;
    return req->path_len == n && memcmp(req->path, rt->path, n) == 0;
}

void mr_http_route(const struct mr_http_route *routes, unsigned n, void *data,
                   struct mr_http_request *req)
{
    uint64_t allowed = 0;
    unsigned i;
    for (i = 0; i < n; i++) {
        const struct mr_http_route *rt = &routes[i];
        if (!path_matches(rt, req)) continue;
        if (rt->methods & MR_HTTP_M(req->method)) {
            rt->cb(data, req, rt->is_prefix ? req->path + strlen(rt->path) : "");
            return;
        }
        allowed |= rt->methods;
    }
    if (allowed == 0) {
        mr_http_respond_error(req, 404, "not_found", "no such endpoint", NULL, 0);
        return;
    }
    {
        char hdr[256], msg[64];
        size_t len = (size_t)snprintf(hdr, sizeof hdr, "Allow:");
        int m, first = 1;
        for (m = 0; m < 64; m++) {
            const char *name;
            if (!(allowed & MR_HTTP_M(m))) continue;
            name = http_method_str((enum http_method)m);
            if (len + strlen(name) + 5 >= sizeof hdr) break;
            len += (size_t)snprintf(hdr + len, sizeof hdr - len, "%s %s",
                                    first ? "" : ",", name);
            first = 0;
        }
        snprintf(hdr + len, sizeof hdr - len, "\r\n");
        snprintf(msg, sizeof msg, "method %s is not allowed here", req->method_name);
        mr_http_respond_error_hdr(req, 405, "method_not_allowed", msg, NULL, 0, hdr);
    }
}
