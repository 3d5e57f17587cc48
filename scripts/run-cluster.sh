#!/bin/sh
# `make run`: start the local 3-node cluster from conf/node1.lua..node3.lua in
# the foreground, wait for a leader, print where everything is, and stop all
# three nodes on Ctrl-C. Data stays under ./data so the next run recovers it.
set -u
BUILD=${1:-build}
BIN="$BUILD/moonraft"
if [ ! -x "$BIN" ]; then
    echo "make run: $BIN was not built (run 'make' and look at its errors)."
    exit 1
fi
mkdir -p data
PIDS=""
cleanup() {
    rc=$1
    trap - INT TERM EXIT
    echo
    echo "stopping nodes:$PIDS"
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    echo "stopped; data kept in ./data (delete it to start fresh)"
    exit "$rc"
}
trap 'cleanup 0' INT TERM
trap 'cleanup $?' EXIT
for n in 1 2 3; do
    "$BIN" --config "conf/node$n.lua" >>"data/node$n.log" 2>&1 &
    PIDS="$PIDS $!"
    echo "node n$n: pid $!, log data/node$n.log"
done
HTTP="127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003"
leader=""
i=0
while [ $i -lt 100 ]; do
    for a in $HTTP; do
        s=$(curl -s --max-time 1 "http://$a/v1/status" 2>/dev/null || true)
        case "$s" in
        *'"role":"leader"'*) leader=$a ;;
        esac
    done
    [ -n "$leader" ] && break
    i=$((i + 1))
    sleep 0.1
done
if [ -z "$leader" ]; then
    echo "no leader after 10 s; see data/node*.log"
    exit 1
fi
cat <<TXT

moonraft: 3 nodes running (kv state machine)
  n1  http://127.0.0.1:8001   raft 127.0.0.1:7001
  n2  http://127.0.0.1:8002   raft 127.0.0.1:7002
  n3  http://127.0.0.1:8003   raft 127.0.0.1:7003
  leader: http://$leader

Try, in another terminal:
  curl -s -X PUT http://127.0.0.1:8002/v1/kv/greeting -d '"hello"'
  curl -s http://127.0.0.1:8003/v1/kv/greeting
  curl -s -X POST http://127.0.0.1:8001/v1/command -d '{"op":"cas","key":"greeting","expect":"hello","value":"hi"}'
  curl -s http://127.0.0.1:8001/v1/status
  $BIN console 127.0.0.1:8001

Ctrl-C stops all three nodes.
TXT
wait
