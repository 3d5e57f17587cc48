#!/bin/sh
# bench/tls.sh: what TLS costs (issue 13). Writes and reads at 1 and 64
# connections against a 3-node plaintext cluster and a 3-node TLS cluster
# (HTTPS API + TLS peer traffic, mutual TLS between peers), both running at
# once on 127.0.0.1, each row's pair run back to back so both see the same
# machine load. wrk speaks https itself (it does not verify certificates).
#
#   sh bench/tls.sh [BUILD_DIR]
#
# Knobs: MR_BENCH_SECONDS (per wrk run, default 5), MR_BENCH_CONNS ("1 64"),
# MR_BENCH_KEEP=1 keeps the temp dir. Every process started is stopped by PID.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MR_BIN="$BUILD/moonraft"
SECS=${MR_BENCH_SECONDS:-5}
CONNS=${MR_BENCH_CONNS:-"1 64"}
export BENCH_WRK_DIR="$ROOT/bench/wrk"
cd "$ROOT" || exit 1
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v wrk >/dev/null 2>&1 || die "wrk is not installed (apt-get install wrk)"
[ -x "$MR_BIN" ] || die "$MR_BIN not built"

TMP=$(mktemp -d /tmp/mr-tlsbench-XXXXXX) || die mktemp
PIDS=""
cleanup() {
    trap - EXIT INT TERM
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    if [ "${MR_BENCH_KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sh "$ROOT/tests/integration/fixtures/gen-certs.sh" "$TMP/certs" || die "certificates"
C="$TMP/certs"
BASE=$((20000 + $$ % 20000))
TLS_ARGS="--tls-cert $C/server.pem --tls-key $C/server.key --tls-ca $C/ca.pem"

# start_cluster name offset [args...]: three nodes on BASE+offset+1..3
start_cluster() {
    local name=$1 off=$2 i peers=""
    shift 2
    for i in 1 2 3; do
        peers="$peers${peers:+,}n$i=127.0.0.1:$((BASE + off + i))"
    done
    for i in 1 2 3; do
        mkdir -p "$TMP/$name$i"
        "$MR_BIN" --id "n$i" --data-dir "$TMP/$name$i/data" \
            --raft-addr "127.0.0.1:$((BASE + off + i))" \
            --http-addr "127.0.0.1:$((BASE + off + 10 + i))" --peers "$peers" \
            --state-machine lua/kv.lua --log-level warn "$@" >>"$TMP/$name$i/log" 2>&1 &
        PIDS="$PIDS $!"
    done
}
# leader scheme offset -> prints the leader's http address
leader() {
    local scheme=$1 off=$2 i t
    for t in $(seq 1 150); do
        for i in 1 2 3; do
            if curl -s --max-time 1 --cacert "$C/ca.pem" \
                "$scheme://127.0.0.1:$((BASE + off + 10 + i))/v1/status" |
                grep -q '"role":"leader"'; then
                echo "127.0.0.1:$((BASE + off + 10 + i))"
                return 0
            fi
        done
        sleep 0.2
    done
    return 1
}
preload() { # url: the keys moonraft_get.lua reads (BENCH_KEYS=100)
    local items="" i
    for i in $(seq 0 99); do
        items="$items${items:+,}\"$(printf 'k%015d' "$i")\":\"v\""
    done
    curl -s --max-time 10 --cacert "$C/ca.pem" -X POST "$1/v1/command" \
        -d "{\"op\":\"mput\",\"items\":{$items}}" >/dev/null ||
        for i in $(seq 0 99); do
            curl -s --cacert "$C/ca.pem" -X PUT "$1/v1/kv/$(printf 'k%015d' "$i")" -d '"v"' \
                >/dev/null
        done
}
run_wrk() { # url script conns -> "rps p50_us p99_us"
    local t=1 out
    [ "$3" -ge 2 ] && t=2
    out=$(BENCH_KEYS=100 wrk -t"$t" -c"$3" -d"${SECS}s" --timeout 10s \
        -s "$BENCH_WRK_DIR/$2" "$1" 2>&1)
    echo "$out" | sed -n 's/^WRKJSON //p' | tail -1 |
        sed 's/.*"rps":\([0-9.]*\).*"p50_us":\([0-9-]*\).*"p99_us":\([0-9-]*\).*/\1 \2 \3/' |
        grep . || echo "0 -1 -1"
}

start_cluster plain 0
start_cluster tls 100 $TLS_ARGS
PL=$(leader http 0) || die "plaintext cluster: no leader (logs in $TMP)"
TL=$(leader https 100) || die "TLS cluster: no leader (logs in $TMP)"
preload "http://$PL"
preload "https://$TL"
log "plaintext leader $PL, TLS leader $TL; $SECS s per run"
sleep 1

printf '%-6s %5s | %10s %8s %8s | %10s %8s %8s | %7s\n' op conns "plain rps" p50_us p99_us \
    "tls rps" p50_us p99_us "tls/pl"
for op in write read; do
    s=moonraft_put.lua
    [ "$op" = read ] && s=moonraft_get.lua
    for c in $CONNS; do
        set -- $(run_wrk "http://$PL" "$s" "$c")
        prps=$1 pp50=$2 pp99=$3
        set -- $(run_wrk "https://$TL" "$s" "$c")
        trps=$1 tp50=$2 tp99=$3
        ratio=$(awk -v a="$trps" -v b="$prps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        printf '%-6s %5s | %10.0f %8s %8s | %10.0f %8s %8s | %7s\n' "$op" "$c" "$prps" "$pp50" \
            "$pp99" "$trps" "$tp50" "$tp99" "$ratio"
    done
done
