/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78).
 * The SSE4.2 crc32 instruction when the CPU has it; a slice-by-8 table
 * otherwise. Both give identical results (tests/unit/test_util.c). */
#include "util/util.h"

#include <string.h>

static uint32_t table[8][256];
static int table_ready;
static int use_hw = -1;

static void table_init(void)
{
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = table[0][i];
        for (j = 1; j < 8; j++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[j][i] = c;
        }
    }
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t mr_crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t mr_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = ~crc;
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE)) table_init();
    while (len >= 8) {
        uint32_t lo = c ^ mr_get_u32(p);
        uint32_t hi = mr_get_u32(p + 4);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^
            table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
            table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
            table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--) c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc,
                                                             const void *buf,
                                                             size_t len)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    while (len--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

uint32_t mr_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
    if (use_hw < 0) {
        __builtin_cpu_init();
        use_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    }
    if (use_hw) return crc32c_hw(crc, buf, len);
#else
    (void)use_hw;
#endif
    return mr_crc32c_sw(crc, buf, len);
}
