/* Node ids: FNV-1a 64 of the node's name. A collision between two names in
 * one cluster is refused when the second one joins (node_join.c). */
#include "node/node_int.h"

#include <string.h>

mr_node_id mr_node_id_from_name(const char *name)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i, n = strlen(name);
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)name[i];
        h *= 1099511628211ULL;
    }
    return h == 0 ? 1 : h; /* 0 means "nobody" in the core */
}
