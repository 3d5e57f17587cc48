/* node_int.h: helpers shared inside src/node. */
#ifndef MR_NODE_INT_H
#define MR_NODE_INT_H

#include "node/node.h"
#include "util/util.h"

/* ---- logging (only src/node logs) ------------------------------------------- */
enum { MR_LOG_DEBUG = 0, MR_LOG_INFO = 1, MR_LOG_WARN = 2, MR_LOG_ERROR = 3 };
void mr_node_log_setup(const char *id, int level);
int mr_node_log_level_parse(const char *s);
void mr_node_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOGD(...) mr_node_log(MR_LOG_DEBUG, __VA_ARGS__)
#define LOGI(...) mr_node_log(MR_LOG_INFO, __VA_ARGS__)
#define LOGW(...) mr_node_log(MR_LOG_WARN, __VA_ARGS__)
#define LOGE(...) mr_node_log(MR_LOG_ERROR, __VA_ARGS__)

/* ---- entry payloads ------------------------------------------------------------ */
#define MR_NODE_ENTRY_COMMAND 1
#define MR_NODE_MAX_IDEM_KEY 256 /* bytes */
struct mr_node_entry {
    uint64_t time_ms;
    const char *key; /* idempotency key, not NUL-terminated; key_len 0 = none */
    size_t key_len;
    const char *cmd; /* command JSON, not NUL-terminated */
    size_t cmd_len;
};
/* New payload (refs = 1) or NULL on OOM / key too long. */
struct mr_rcbuf *mr_node_entry_encode(uint64_t time_ms, const char *key, size_t key_len,
                                      const char *cmd, size_t cmd_len);
/* Parses untrusted bytes; `out` points into `p`. MR_EMALFORMED on bad input. */
int mr_node_entry_decode(const unsigned char *p, size_t len, struct mr_node_entry *out);

/* ---- idempotency table ------------------------------------------------------------- */
struct mr_idem_rec {
    struct mr_queue q;         /* in mr_idem.order, by index */
    struct mr_idem_rec *next;  /* hash chain */
    mr_index index;            /* where the command was applied */
    int status;                /* 0 or the MR_E* outcome (MR_ESCRIPT...) */
    char *result;              /* result JSON (status 0) or error message */
    size_t result_len;
    size_t key_len;
    char key[];
};
struct mr_idem {
    struct mr_idem_rec **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
    struct mr_queue order;
    mr_index window; /* records live for this many log indexes */
};
int mr_idem_init(struct mr_idem *t, mr_index window);
void mr_idem_close(struct mr_idem *t);
void mr_idem_clear(struct mr_idem *t);
/* Borrowed pointer, valid until the next put/expire/clear. */
const struct mr_idem_rec *mr_idem_get(const struct mr_idem *t, const char *key, size_t len);
/* Copies key and result. MR_EEXISTS if the key is present, MR_ENOMEM. */
int mr_idem_put(struct mr_idem *t, const char *key, size_t len, mr_index index, int status,
                const char *result, size_t result_len);
void mr_idem_expire(struct mr_idem *t, mr_index applied);
size_t mr_idem_encoded_size(const struct mr_idem *t);
/* Writes exactly mr_idem_encoded_size() bytes. */
void mr_idem_encode(const struct mr_idem *t, unsigned char *p);
/* Replaces the table's content from untrusted bytes; *used = bytes consumed.
 * On error the table is left empty. */
int mr_idem_decode(struct mr_idem *t, const unsigned char *p, size_t len, size_t *used);

/* Node ids: the Raft core uses 64-bit ids; people use names ("n1"). */
mr_node_id mr_node_id_from_name(const char *name);

#endif
