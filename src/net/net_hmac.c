/* HMAC-SHA-256 (RFC 2104) on libmd's SHA-256, and the handshake proof. */
#include <sha2.h>
#include <string.h>

#include "net/net_int.h"

void mr_net_hmac_sha256(const void *key, size_t key_len, const void *msg,
                        size_t msg_len, uint8_t out[MR_NET_MAC_SIZE])
{
    uint8_t k[SHA256_BLOCK_LENGTH];
    uint8_t pad[SHA256_BLOCK_LENGTH];
    uint8_t inner[SHA256_DIGEST_LENGTH];
    SHA2_CTX ctx;
    size_t i;

    /* Keys longer than a block are hashed first (RFC 2104 section 2). */
    memset(k, 0, sizeof k);
    if (key_len > SHA256_BLOCK_LENGTH) {
        SHA256Init(&ctx);
        SHA256Update(&ctx, key, key_len);
        SHA256Final(k, &ctx);
    } else if (key_len > 0) {
        memcpy(k, key, key_len);
    }

    for (i = 0; i < sizeof pad; i++) pad[i] = (uint8_t)(k[i] ^ 0x36);
    SHA256Init(&ctx);
    SHA256Update(&ctx, pad, sizeof pad);
    if (msg_len > 0) SHA256Update(&ctx, msg, msg_len);
    SHA256Final(inner, &ctx);

    for (i = 0; i < sizeof pad; i++) pad[i] = (uint8_t)(k[i] ^ 0x5c);
    SHA256Init(&ctx);
    SHA256Update(&ctx, pad, sizeof pad);
    SHA256Update(&ctx, inner, sizeof inner);
    SHA256Final(out, &ctx);

    /* The key material must not linger on the stack. */
    explicit_bzero(k, sizeof k);
    explicit_bzero(pad, sizeof pad);
    explicit_bzero(inner, sizeof inner);
    explicit_bzero(&ctx, sizeof ctx);
}

void mr_net_handshake_proof(const void *secret, size_t secret_len,
                            int is_acceptor, const char *cluster,
                            mr_node_id dialer, mr_node_id acceptor,
                            const uint8_t dialer_nonce[MR_NET_NONCE_SIZE],
                            const uint8_t acceptor_nonce[MR_NET_NONCE_SIZE],
                            uint8_t out[MR_NET_MAC_SIZE])
{
    /* label | u8 n + cluster | u64 dialer | u64 acceptor | nonces */
    uint8_t msg[32 + 1 + MR_NET_NAME_MAX + 16 + 2 * MR_NET_NONCE_SIZE];
    const char *label = is_acceptor ? "moonraft/1 acceptor" : "moonraft/1 dialer";
    size_t n = 0, ln = strlen(label), cn = strlen(cluster);

    MR_ASSERT(cn <= MR_NET_NAME_MAX);
    memcpy(msg, label, ln);
    n += ln;
    msg[n++] = (uint8_t)cn;
    memcpy(msg + n, cluster, cn);
    n += cn;
    mr_put_u64(msg + n, dialer);
    n += 8;
    mr_put_u64(msg + n, acceptor);
    n += 8;
    memcpy(msg + n, dialer_nonce, MR_NET_NONCE_SIZE);
    n += MR_NET_NONCE_SIZE;
    memcpy(msg + n, acceptor_nonce, MR_NET_NONCE_SIZE);
    n += MR_NET_NONCE_SIZE;
    mr_net_hmac_sha256(secret, secret_len, msg, n, out);
}

int mr_net_mac_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t diff = 0;
    size_t i;
    for (i = 0; i < n; i++) diff |= (uint8_t)(a[i] ^ b[i]);
    return diff == 0;
}
