/* http: growable buffer, JSON string escaping and a small JSON writer. */
#include "http/http_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ---------------------------------------------------------------- */
void mr_http_buf_init(struct mr_http_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->is_oom = 0;
}

void mr_http_buf_close(struct mr_http_buf *b)
{
    mr_free(b->data);
    mr_http_buf_init(b);
}

void mr_http_buf_reset(struct mr_http_buf *b)
{
    b->len = 0;
    b->is_oom = 0;
    if (b->data != NULL) b->data[0] = '\0';
}

int mr_http_buf_reserve(struct mr_http_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (b->is_oom) return MR_ENOMEM;
    /* +1 keeps room for the terminating NUL. */
    if (extra > SIZE_MAX / 2 - b->len) goto oom;
    need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need) cap *= 2;
    p = mr_realloc(b->data, cap);
    if (p == NULL) goto oom;
    b->data = p;
    b->cap = cap;
    return 0;
oom:
    b->is_oom = 1;
    return MR_ENOMEM;
}

int mr_http_buf_append(struct mr_http_buf *b, const void *data, size_t len)
{
    if (mr_http_buf_reserve(b, len) != 0) return MR_ENOMEM;
    if (len > 0) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int mr_http_buf_puts(struct mr_http_buf *b, const char *s)
{
    return mr_http_buf_append(b, s, strlen(s));
}

int mr_http_buf_printf(struct mr_http_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (mr_http_buf_reserve(b, 64) != 0) return MR_ENOMEM;
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return MR_EINVAL;
    if ((size_t)n >= b->cap - b->len) {
        if (mr_http_buf_reserve(b, (size_t)n) != 0) return MR_ENOMEM;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

/* ---- JSON string escaping -------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid; *bad gets
 * the length of the maximal invalid subpart to replace (>= 1) then. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t need, i;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;      /* overlong */
        if (c == 0xED) hi = 0x9F;      /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;      /* overlong */
        if (c == 0xF4) hi = 0x8F;      /* above U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    for (i = 1; i < need; i++) {
        unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (i >= n || s[i] < lo_i || s[i] > hi_i) {
            *bad = i;
            return 0;
        }
    }
    return need;
}

int mr_http_json_escape(struct mr_http_buf *b, const char *str, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    /* Worst case grows 6x (\u00XX); reserve for the common case once. */
    if (mr_http_buf_reserve(b, len + 2) != 0) return MR_ENOMEM;
    mr_http_buf_append(b, "\"", 1);
    while (i < len) {
        unsigned char c = s[i];
        size_t n, bad = 0;
        char esc[8];
        const char *out = NULL;
        size_t outlen = 0;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            run++;
            continue;
        }
        if (c >= 0x80) {
            n = utf8_seq(s + i, len - i, &bad);
            if (n == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
                out = s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
                outlen = 6;
            } else if (n > 0) {
                i += n;
                run += n;
                continue;
            } else {
                out = "\xEF\xBF\xBD";
                outlen = 3;
                n = bad;
            }
        } else {
            n = 1;
            switch (c) {
            case '"': out = "\\\""; break;
            case '\\': out = "\\\\"; break;
            case '\b': out = "\\b"; break;
            case '\f': out = "\\f"; break;
            case '\n': out = "\\n"; break;
            case '\r': out = "\\r"; break;
            case '\t': out = "\\t"; break;
            default:
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                out = esc;
                outlen = 6;
                break;
            }
            if (outlen == 0) outlen = 2;
        }
        mr_http_buf_append(b, s + i - run, run);
        run = 0;
        mr_http_buf_append(b, out, outlen);
        i += n;
    }
    mr_http_buf_append(b, s + i - run, run);
    return mr_http_buf_append(b, "\"", 1);
}

/* ---- JSON writer ------------------------------------------------------------ */
void mr_http_json_init(struct mr_http_json *j, struct mr_http_buf *b)
{
    j->b = b;
    j->depth = 0;
    j->is_after_key = 0;
    j->has_items = 0;
}

static void before_value(struct mr_http_json *j)
{
    uint64_t bit = (uint64_t)1 << j->depth;
    if (j->is_after_key) {
        j->is_after_key = 0;
        return;
    }
    if (j->has_items & bit) mr_http_buf_append(j->b, ",", 1);
    j->has_items |= bit;
}

static void open_level(struct mr_http_json *j, char c)
{
    before_value(j);
    MR_ASSERT(j->depth + 1 < MR_HTTP_JSON_MAX_DEPTH);
    mr_http_buf_append(j->b, &c, 1);
    j->depth++;
    j->has_items &= ~((uint64_t)1 << j->depth);
}

static void close_level(struct mr_http_json *j, char c)
{
    MR_ASSERT(j->depth > 0);
    j->depth--;
    mr_http_buf_append(j->b, &c, 1);
}

void mr_http_json_obj_begin(struct mr_http_json *j) { open_level(j, '{'); }
void mr_http_json_obj_end(struct mr_http_json *j) { close_level(j, '}'); }
void mr_http_json_arr_begin(struct mr_http_json *j) { open_level(j, '['); }
void mr_http_json_arr_end(struct mr_http_json *j) { close_level(j, ']'); }

void mr_http_json_key(struct mr_http_json *j, const char *key)
{
    before_value(j);
    mr_http_json_escape(j->b, key, strlen(key));
    mr_http_buf_append(j->b, ":", 1);
    j->is_after_key = 1;
}

void mr_http_json_str(struct mr_http_json *j, const char *s)
{
    if (s == NULL) {
        mr_http_json_null(j);
        return;
    }
    mr_http_json_strn(j, s, strlen(s));
}

void mr_http_json_strn(struct mr_http_json *j, const char *s, size_t len)
{
    before_value(j);
    mr_http_json_escape(j->b, s, len);
}

void mr_http_json_int(struct mr_http_json *j, int64_t v)
{
    before_value(j);
    mr_http_buf_printf(j->b, "%lld", (long long)v);
}

void mr_http_json_uint(struct mr_http_json *j, uint64_t v)
{
    before_value(j);
    mr_http_buf_printf(j->b, "%llu", (unsigned long long)v);
}

int mr_http__fmt_double(char *out, size_t size, double v)
{
    int prec, n = 0;
    for (prec = 15; prec <= 17; prec++) {
        n = snprintf(out, size, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    return n;
}

void mr_http_json_double(struct mr_http_json *j, double v)
{
    char tmp[40];
    if (!isfinite(v)) {
        mr_http_json_null(j);
        return;
    }
    before_value(j);
    mr_http__fmt_double(tmp, sizeof tmp, v);
    mr_http_buf_puts(j->b, tmp);
}

void mr_http_json_bool(struct mr_http_json *j, int v)
{
    before_value(j);
    mr_http_buf_puts(j->b, v ? "true" : "false");
}

void mr_http_json_null(struct mr_http_json *j)
{
    before_value(j);
    mr_http_buf_puts(j->b, "null");
}

void mr_http_json_raw(struct mr_http_json *j, const char *json, size_t len)
{
    before_value(j);
    mr_http_buf_append(j->b, json, len);
}

int mr_http_error_body(struct mr_http_buf *b, const char *code, const char *message,
                       const char *leader)
{
    struct mr_http_json j;
    mr_http_json_init(&j, b);
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "error");
    mr_http_json_obj_begin(&j);
    mr_http_json_key(&j, "code");
    mr_http_json_str(&j, code);
    mr_http_json_key(&j, "message");
    mr_http_json_str(&j, message);
    mr_http_json_key(&j, "leader");
    mr_http_json_str(&j, leader);
    mr_http_json_obj_end(&j);
    mr_http_json_obj_end(&j);
    return b->is_oom ? MR_ENOMEM : 0;
}
