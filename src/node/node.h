/* node: the moonraft server process. It wires the Raft core, storage, peer
 * transport, the Lua state machine and the HTTP API onto one libuv loop. */
#ifndef MR_NODE_H
#define MR_NODE_H

#include "util/util.h"

#endif
