/* raft_config.c: cluster configurations and their wire/disk encoding.
 *
 * The encoding travels inside CONFIG log entries and snapshot metadata, so
 * the decoder treats its input as untrusted (STYLE 8). */
#include <string.h>

#include "raft/raft_int.h"

#define CONFIG_VERSION 1

void mr_raft_config_init(struct mr_raft_config *c) { memset(c, 0, sizeof(*c)); }

void mr_raft_config_close(struct mr_raft_config *c)
{
    for (unsigned i = 0; i < c->n; i++) mr_free(c->servers[i].context);
    mr_free(c->servers);
    memset(c, 0, sizeof(*c));
}

const struct mr_raft_server *mr_raft_config_get(const struct mr_raft_config *c,
                                                mr_node_id id)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id) return &c->servers[i];
    return NULL;
}

unsigned mr_raft_config_voters(const struct mr_raft_config *c)
{
    unsigned v = 0;
    for (unsigned i = 0; i < c->n; i++) v += c->servers[i].role == MR_RAFT_VOTER;
    return v;
}

/* Adds a server taking ownership of `context` (already allocated). */
static int add_owned(struct mr_raft_config *c, mr_node_id id, int role, char *context)
{
    if (c->n == c->cap) {
        unsigned cap = c->cap ? c->cap * 2 : 4;
        struct mr_raft_server *s = mr_realloc(c->servers, cap * sizeof(*s));
        if (s == NULL) return MR_ENOMEM;
        c->servers = s;
        c->cap = cap;
    }
    c->servers[c->n].id = id;
    c->servers[c->n].role = (uint8_t)role;
    c->servers[c->n].context = context;
    c->n++;
    return 0;
}

int mr_raft_config_add(struct mr_raft_config *c, mr_node_id id, int role,
                       const char *context)
{
    if (id == 0 || (role != MR_RAFT_VOTER && role != MR_RAFT_LEARNER)) return MR_EINVAL;
    if (mr_raft_config_get(c, id) != NULL) return MR_EEXISTS;
    char *copy = mr_strdup(context ? context : "");
    if (copy == NULL) return MR_ENOMEM;
    int rv = add_owned(c, id, role, copy);
    if (rv != 0) mr_free(copy);
    return rv;
}

int mr_raft_config_remove(struct mr_raft_config *c, mr_node_id id)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id != id) continue;
        mr_free(c->servers[i].context);
        memmove(&c->servers[i], &c->servers[i + 1], (c->n - i - 1) * sizeof(c->servers[0]));
        c->n--;
        return 0;
    }
    return MR_ENOTFOUND;
}

int mr_raft_config_copy(struct mr_raft_config *dst, const struct mr_raft_config *src)
{
    mr_raft_config_init(dst);
    for (unsigned i = 0; i < src->n; i++) {
        int rv = mr_raft_config_add(dst, src->servers[i].id, src->servers[i].role,
                                    src->servers[i].context);
        if (rv != 0) {
            mr_raft_config_close(dst);
            return rv;
        }
    }
    return 0;
}

struct mr_rcbuf *mr_raft_config_encode(const struct mr_raft_config *c)
{
    size_t len = 1 + 4;
    for (unsigned i = 0; i < c->n; i++) len += 8 + 1 + 4 + strlen(c->servers[i].context);
    struct mr_rcbuf *b = mr_rcbuf_new(len);
    if (b == NULL) return NULL;
    unsigned char *p = b->data;
    *p++ = CONFIG_VERSION;
    mr_put_u32(p, c->n);
    p += 4;
    for (unsigned i = 0; i < c->n; i++) {
        size_t l = strlen(c->servers[i].context);
        mr_put_u64(p, c->servers[i].id);
        p += 8;
        *p++ = c->servers[i].role;
        mr_put_u32(p, (uint32_t)l);
        p += 4;
        memcpy(p, c->servers[i].context, l);
        p += l;
    }
    MR_ASSERT((size_t)(p - b->data) == len);
    return b;
}

static int malformed(char *errmsg, struct mr_raft_config *out, const char *why, unsigned i)
{
    if (errmsg != NULL) mr_errmsg_printf(errmsg, "configuration: server %u: %s", i, why);
    mr_raft_config_close(out);
    return MR_EMALFORMED;
}

int mr_raft_config_decode(const void *buf, size_t len, struct mr_raft_config *out,
                          char *errmsg)
{
    const unsigned char *p = buf, *end = p + len;
    mr_raft_config_init(out);
    if (buf == NULL || len < 5) {
        if (errmsg != NULL) mr_errmsg_printf(errmsg, "configuration: truncated header");
        return MR_EMALFORMED;
    }
    if (p[0] != CONFIG_VERSION) {
        if (errmsg != NULL)
            mr_errmsg_printf(errmsg, "configuration: unknown version %u", (unsigned)p[0]);
        return MR_EMALFORMED;
    }
    uint32_t n = mr_get_u32(p + 1);
    p += 5;
    if (n > MR_RAFT_CONFIG_MAX_SERVERS) return malformed(errmsg, out, "too many servers", n);
    for (uint32_t i = 0; i < n; i++) {
        if ((size_t)(end - p) < 13) return malformed(errmsg, out, "truncated", i);
        mr_node_id id = mr_get_u64(p);
        uint8_t role = p[8];
        uint32_t l = mr_get_u32(p + 9);
        p += 13;
        if (id == 0) return malformed(errmsg, out, "id 0", i);
        if (role != MR_RAFT_VOTER && role != MR_RAFT_LEARNER)
            return malformed(errmsg, out, "bad role", i);
        if (l > MR_RAFT_CONFIG_MAX_CONTEXT) return malformed(errmsg, out, "context too long", i);
        if ((size_t)(end - p) < l) return malformed(errmsg, out, "truncated context", i);
        if (memchr(p, 0, l) != NULL) return malformed(errmsg, out, "NUL in context", i);
        if (mr_raft_config_get(out, id) != NULL) return malformed(errmsg, out, "duplicate id", i);
        char *ctx = mr_malloc((size_t)l + 1);
        if (ctx == NULL) {
            mr_raft_config_close(out);
            return MR_ENOMEM;
        }
        memcpy(ctx, p, l);
        ctx[l] = '\0';
        p += l;
        if (add_owned(out, id, role, ctx) != 0) {
            mr_free(ctx);
            mr_raft_config_close(out);
            return MR_ENOMEM;
        }
    }
    if (p != end) return malformed(errmsg, out, "trailing bytes after", n);
    return 0;
}
