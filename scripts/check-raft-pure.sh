#!/bin/sh
# Fails if the Raft core (src/raft) reaches for I/O, clocks, threads, Lua or libuv.
dir=${1:-src/raft}
bad=$(grep -nE '#include *<(uv|lua|lauxlib|pthread|time|sys/[a-z]*|unistd|fcntl|stdio|sys/socket|netinet/[a-z]*|arpa/[a-z]*|threads)\.h>|#include *"(uv|lua)|\b(rand|srand|time|clock_gettime|gettimeofday|fopen|open|read|write|socket|connect|printf|fprintf|pthread_[a-z_]+|uv_[a-z_]+)\(' "$dir"/*.c "$dir"/*.h 2>/dev/null)
if [ -n "$bad" ]; then
    echo "src/raft must be pure (no I/O, clocks, threads, Lua, libuv):"
    echo "$bad"
    exit 1
fi
echo "src/raft is pure: $(ls "$dir"/*.c "$dir"/*.h 2>/dev/null | wc -l) files checked"
