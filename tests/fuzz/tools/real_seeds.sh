#!/bin/sh
# Adds seeds taken from a real node's data directory to the wal and snapshot
# corpora: starts one node on 127.0.0.1, writes some keys (with an
# idempotency key), forces a snapshot, stops the node by PID and copies its
# newest WAL segment and snapshot file, each behind the flag byte the targets
# read first (see the header comments of fuzz_wal.c and fuzz_snapshot.c).
# Usage (repository root, after `make`): sh tests/fuzz/tools/real_seeds.sh
set -eu
BIN=${BIN:-build/moonraft}
DIR=$(mktemp -d)
PORT_R=${PORT_R:-17951}
PORT_H=${PORT_H:-17952}
"$BIN" --id s1 --data-dir "$DIR/d" --peers "s1=127.0.0.1:$PORT_R" \
    --http-addr "127.0.0.1:$PORT_H" --log-level warn >"$DIR/log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
i=0
until curl -sf "http://127.0.0.1:$PORT_H/v1/status" | grep -q '"role":"leader"'; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "no leader"; exit 1; }
    sleep 0.1
done
for k in a b c d e; do
    curl -sf -X PUT "http://127.0.0.1:$PORT_H/v1/kv/$k" -d "{\"v\":\"$k\",\"n\":[1,2.5,null]}" >/dev/null
done
curl -sf -X POST "http://127.0.0.1:$PORT_H/v1/command" -H 'Idempotency-Key: seed-1' \
    -d '{"op":"cas","key":"a","expect":null,"value":1}' >/dev/null || true
curl -sf -X POST "http://127.0.0.1:$PORT_H/v1/snapshot" >/dev/null
sleep 1
kill "$PID"; wait "$PID" 2>/dev/null || true
seg=$(ls "$DIR"/d/wal/*.seg | tail -n 1)
# segments are preallocated: keep only the bytes in use
used=$("$BIN" data verify "$DIR/d" | sed -n 's/.* used \([0-9]*\) of .*/\1/p' | tail -n 1)
snap=$(ls "$DIR"/d/snap/* | tail -n 1)
# wal: flag 0x01 = scan as the last segment; snapshot: 0x06 = recover + restore
{ printf '\001'; head -c "$used" "$seg"; } >tests/fuzz/corpus/wal/real_node_segment
{ printf '\006'; cat "$snap"; } >tests/fuzz/corpus/snapshot/real_node_snapshot
echo "wrote tests/fuzz/corpus/wal/real_node_segment and tests/fuzz/corpus/snapshot/real_node_snapshot"
