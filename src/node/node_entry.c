/* node_entry: the payload of a NORMAL log entry, as the node writes it.
 *
 *   u8  version (1)
 *   u8  kind    (MR_NODE_ENTRY_COMMAND)
 *   u16 idempotency key length (0 = none), little-endian
 *   u64 time_ms assigned by the leader when it proposed (ctx.time)
 *   key bytes
 *   command JSON (the rest)
 *
 * Bytes come from disk or the network: decode checks every length. */
#include "node/node_int.h"

#include <string.h>

#define ENTRY_HDR 12

struct mr_rcbuf *mr_node_entry_encode(uint64_t time_ms, const char *key, size_t key_len,
                                      const char *cmd, size_t cmd_len)
{
    struct mr_rcbuf *b;
    if (key_len > MR_NODE_MAX_IDEM_KEY) return NULL;
    b = mr_rcbuf_new(ENTRY_HDR + key_len + cmd_len);
    if (b == NULL) return NULL;
    b->data[0] = 1;
    b->data[1] = MR_NODE_ENTRY_COMMAND;
    b->data[2] = (unsigned char)(key_len & 0xff);
    b->data[3] = (unsigned char)(key_len >> 8);
    mr_put_u64(b->data + 4, time_ms);
    if (key_len) memcpy(b->data + ENTRY_HDR, key, key_len);
    if (cmd_len) memcpy(b->data + ENTRY_HDR + key_len, cmd, cmd_len);
    return b;
}

int mr_node_entry_decode(const unsigned char *p, size_t len, struct mr_node_entry *out)
{
    size_t key_len;
    memset(out, 0, sizeof *out);
    if (len < ENTRY_HDR || p[0] != 1 || p[1] != MR_NODE_ENTRY_COMMAND) return MR_EMALFORMED;
    key_len = (size_t)p[2] | (size_t)p[3] << 8;
    if (key_len > MR_NODE_MAX_IDEM_KEY || len - ENTRY_HDR < key_len) return MR_EMALFORMED;
    out->time_ms = mr_get_u64(p + 4);
    out->key = (const char *)p + ENTRY_HDR;
    out->key_len = key_len;
    out->cmd = (const char *)p + ENTRY_HDR + key_len;
    out->cmd_len = len - ENTRY_HDR - key_len;
    return 0;
}
