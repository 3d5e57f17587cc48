#!/bin/sh
# bench/compare.sh: moonraft vs etcd, side by side, in one run (issue 7).
#
#   sh bench/compare.sh [BUILD_DIR]        (run from anywhere; `make bench`)
#
# Starts a 3-node moonraft cluster (kv state machine, fsync on, default
# timeouts) and a 3-node etcd cluster (Debian's etcd-server, defaults) on
# 127.0.0.1 with temp data dirs, drives moonraft and etcd's JSON gateway with
# wrk and the Lua scripts in bench/wrk/, and etcd's gRPC API with etcd's own
# benchmark tool (bench/etcd-benchmark.sh builds it; without it the gateway
# is the only anchor, and the table says so). Each cell also reports the
# servers' CPU per request (utime+stime of the three server processes and of
# their reaped children, from /proc/PID/stat) and the snapshots each node
# took during the cell. Prints one table and writes
# bench/results/<UTC time>.json. Every process it starts is stopped by PID on
# exit (also on Ctrl-C).
#
# Environment knobs:
#   MR_BENCH_SECONDS    seconds per cell (default 20: long enough for
#                       snapshots, compaction and WAL segment rolls)
#   MR_BENCH_CONNS      write client counts (default "1 16 64 256")
#   MR_BENCH_READ_CONNS linearizable read client counts (default "64 256")
#   MR_BENCH_PRELOAD    keys preloaded for the read rows (default 10000)
#   MR_BENCH_KEYS       keys for the memory/disk/restart/snapshot rows (default 1000000)
#   MR_BENCH_FAILOVERS  leader kills per system (default 5)
#   MR_BENCH_ONLY       "matrix" to skip everything after the matrix (and
#                       the snapshot A/B), "snap" for the snapshot A/B only,
#                       "big" to skip the matrix (default: everything)
#   MR_BENCH_SNAP_CONNS clients of the snapshot A/B cell (default 64): moonraft
#                       writes on a fresh cluster with default snapshots, then
#                       on one with snapshots pushed out of the window
#   MR_BENCH_KEEP=1     keep the temp dir (logs, data) after the run
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MR_BIN="$BUILD/moonraft"
FLOOR_BIN="$BUILD/bench/bench_floor"
SECS=${MR_BENCH_SECONDS:-20}
CONNS=${MR_BENCH_CONNS:-"1 16 64 256"}
READ_CONNS=${MR_BENCH_READ_CONNS:-"64 256"}
SNAP_CONNS=${MR_BENCH_SNAP_CONNS:-64}
PRELOAD=${MR_BENCH_PRELOAD:-10000}
BIGKEYS=${MR_BENCH_KEYS:-1000000}
FAILOVERS=${MR_BENCH_FAILOVERS:-5}
ONLY=${MR_BENCH_ONLY:-all}
export BENCH_WRK_DIR="$ROOT/bench/wrk"
cd "$ROOT" || exit 1

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools ----------------------------------------------------------------------
need_pkgs=""
command -v wrk >/dev/null 2>&1 || need_pkgs="$need_pkgs wrk"
command -v etcd >/dev/null 2>&1 || need_pkgs="$need_pkgs etcd-server"
command -v jq >/dev/null 2>&1 || need_pkgs="$need_pkgs jq"
command -v curl >/dev/null 2>&1 || need_pkgs="$need_pkgs curl"
if [ -n "$need_pkgs" ]; then
    log "installing:$need_pkgs"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $need_pkgs >&2 ||
        { $SUDO apt-get update >&2 &&
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $need_pkgs >&2; } ||
        die "apt-get install$need_pkgs failed"
fi
[ -x "$MR_BIN" ] || die "$MR_BIN not built (make build)"
# etcd's own gRPC benchmark (built once, cached): the second anchor
EBENCH=""
if [ "$ONLY" != big ] && [ "$ONLY" != snap ]; then
    EBENCH=$(sh "$ROOT/bench/etcd-benchmark.sh") || EBENCH=""
    [ -n "$EBENCH" ] ||
        log "WARNING: etcd's gRPC benchmark tool could not be built (see above): the JSON gateway is the only etcd anchor"
fi
[ -x "$FLOOR_BIN" ] || die "$FLOOR_BIN not built (make build)"

TMP=$(mktemp -d /tmp/mr-compare-XXXXXX) || die "mktemp"
RES="$TMP/results.jsonl"
: >"$RES"
# PIDs of what we started, by name: mr1..mr4, e1..e3, wrk (POSIX sh has no
# associative arrays: one variable per name, PID_<name>).
PIDS_ALL="mr1 mr2 mr3 mr4 e1 e2 e3 wrk"
pid_set() { eval "PID_$1=\$2"; }
pid_of() { eval "echo \"\${PID_$1:-}\""; }

cleanup() {
    trap - EXIT INT TERM
    local k p
    for k in $PIDS_ALL; do
        p=$(pid_of "$k")
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    done
    for k in $PIDS_ALL; do
        p=$(pid_of "$k")
        [ -n "$p" ] && wait "$p" 2>/dev/null
    done
    if [ "${MR_BENCH_KEEP:-0}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- ports ------------------------------------------------------------------------
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
BASE=$((20000 + ($$ % 120) * 100)) # 20000..31999: below the ephemeral range (32768+)
while port_busy $((BASE + 1)) || port_busy $((BASE + 11)) || port_busy $((BASE + 21)) ||
    port_busy $((BASE + 31)); do
    BASE=$((BASE + 100))
done
# moonraft: raft BASE+1..4, http BASE+11..14; etcd: client BASE+21..23, peer BASE+31..33
mr_http() { echo "127.0.0.1:$((BASE + 10 + $1))"; }
mr_raft() { echo "127.0.0.1:$((BASE + $1))"; }
e_client() { echo "127.0.0.1:$((BASE + 20 + $1))"; }
e_peer() { echo "127.0.0.1:$((BASE + 30 + $1))"; }
MR_PEERS="n1=$(mr_raft 1),n2=$(mr_raft 2),n3=$(mr_raft 3)"
E_CLUSTER="e1=http://$(e_peer 1),e2=http://$(e_peer 2),e3=http://$(e_peer 3)"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
# CPU ticks (utime+stime, and cutime+cstime: the reaped snapshot children)
# of the processes whose PIDs are given
cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

# ---- moonraft ---------------------------------------------------------------------
mr_start() { # i [extra args...]
    local i=$1
    shift
    mkdir -p "$TMP/mr$i"
    "$MR_BIN" --id "n$i" --data-dir "$TMP/mr$i/data" --raft-addr "$(mr_raft "$i")" \
        --http-addr "$(mr_http "$i")" --state-machine lua/kv.lua --log-level warn "$@" \
        >>"$TMP/mr$i/log" 2>&1 &
    pid_set mr$i $!
}
mr_start_static() { mr_start "$1" --peers "$MR_PEERS"; }
mr_role() { curl -s --max-time 1 "http://$(mr_http "$1")/v1/status" | jq -r '.role // empty' 2>/dev/null; }
mr_leader() { # prints the index of the node all running nodes agree leads, or nothing
    local i r l=""
    for i in 1 2 3; do
        [ -n "$(pid_of mr$i)" ] || continue
        r=$(mr_role "$i")
        [ "$r" = leader ] && l=$i
        [ -z "$r" ] && return
    done
    echo "$l"
}
mr_put() { # i key [timeout_s] -> 0 on HTTP 200
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-2}" -X PUT \
        "http://$(mr_http "$1")/v1/kv/$2" -d '"x"' 2>/dev/null)
    [ "$code" = 200 ]
}

# ---- etcd -------------------------------------------------------------------------
e_start() { # i [initial-cluster-state]
    local i=$1
    mkdir -p "$TMP/e$i"
    etcd --name "e$i" --data-dir "$TMP/e$i/data" \
        --listen-client-urls "http://$(e_client "$i")" --advertise-client-urls "http://$(e_client "$i")" \
        --listen-peer-urls "http://$(e_peer "$i")" --initial-advertise-peer-urls "http://$(e_peer "$i")" \
        --initial-cluster "$E_CLUSTER" --initial-cluster-state "${2:-new}" \
        --initial-cluster-token mr-bench --log-level warn >>"$TMP/e$i/log" 2>&1 &
    pid_set e$i $!
}
e_is_leader() { # i -> "true"/"false"/""
    curl -s --max-time 1 -X POST "http://$(e_client "$1")/v3/maintenance/status" -d '{}' |
        jq -r 'if .header.member_id then (.header.member_id == .leader) else empty end' 2>/dev/null
}
e_leader() {
    local i r l=""
    for i in 1 2 3; do
        [ -n "$(pid_of e$i)" ] || continue
        r=$(e_is_leader "$i")
        [ "$r" = true ] && l=$i
        [ -z "$r" ] && return
    done
    echo "$l"
}
b64() { printf '%s' "$1" | base64 -w0; }
e_put() { # i key [timeout_s]
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-2}" -X POST \
        "http://$(e_client "$1")/v3/kv/put" -d "{\"key\":\"$(b64 "$2")\",\"value\":\"eA==\"}" 2>/dev/null)
    [ "$code" = 200 ]
}

wait_leader() { # mr|e timeout_s -> prints leader index
    local sys=$1 deadline=$(($(now_ms) + $2 * 1000)) l
    while [ "$(now_ms)" -lt "$deadline" ]; do
        l=$("${sys}_leader")
        if [ -n "$l" ]; then
            echo "$l"
            return 0
        fi
        sleep 0.1
    done
    return 1
}
other_than() { # leader -> a follower index
    echo $(($1 % 3 + 1))
}

# ---- wrk --------------------------------------------------------------------------
# run_wrk url script conns seconds [env...] -> prints the WRKJSON object
run_wrk() {
    local url=$1 script=$2 c=$3 d=$4 t=1 out
    shift 4
    [ "$c" -ge 2 ] && t=2
    out=$(env "$@" wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s -s "$BENCH_WRK_DIR/$script" "$url" 2>&1)
    echo "$out" | sed -n 's/^WRKJSON //p' | tail -1 | grep . || {
        echo "$out" | tail -3 | sed 's/^/  wrk: /' >&2
        echo '{"requests":0,"errors":0,"status_errors":0,"seconds":0,"rps":0,"p50_us":-1,"p99_us":-1,"max_us":-1}'
    }
}
# wrk_bg file url script conns seconds [env...]: wrk in the background (PID_wrk);
# wrk_bg_stop sends SIGINT, after which wrk prints its summary and done() line.
wrk_bg() {
    local f=$1 url=$2 script=$3 c=$4 d=$5
    shift 5
    env "$@" wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s "$BENCH_WRK_DIR/$script" "$url" >"$f" 2>&1 &
    pid_set wrk $!
}
wrk_bg_stop() {
    kill -INT "$(pid_of wrk)" 2>/dev/null
    wait "$(pid_of wrk)" 2>/dev/null
    pid_set wrk ""
}
record() { # json-object -> appends to the results
    echo "$1" >>"$RES"
}

# ---- start both ---------------------------------------------------------------------
log "temp dir $TMP, ports $BASE+"
for i in 1 2 3; do mr_start_static "$i"; done
for i in 1 2 3; do e_start "$i"; done
MRL=$(wait_leader mr 30) || die "moonraft: no leader (logs in $TMP/mr*/log)"
EL=$(wait_leader e 30) || die "etcd: no leader (logs in $TMP/e*/log)"
log "moonraft leader n$MRL, etcd leader e$EL"
sleep 2
for i in 1 2 3; do
    record "{\"kind\":\"rss_idle\",\"system\":\"moonraft\",\"node\":$i,\"kib\":$(rss_kib "$(pid_of mr$i)")}"
    record "{\"kind\":\"rss_idle\",\"system\":\"etcd\",\"node\":$i,\"kib\":$(rss_kib "$(pid_of e$i)")}"
done

# ---- floors -------------------------------------------------------------------------
FLOOR=$("$FLOOR_BIN" "$TMP" 2) || die "bench_floor failed"
record "{\"kind\":\"floor\",\"floor\":$FLOOR}"
log "floor: $FLOOR"

# mput support: one small command tells
MPUT=0
code=$(curl -s -o "$TMP/mput.out" -w '%{http_code}' -X POST "http://$(mr_http "$MRL")/v1/command" \
    -d '{"op":"mput","items":{"mput-probe":1}}')
if [ "$code" = 200 ]; then MPUT=1000; fi
log "moonraft kv mput: $([ $MPUT -gt 0 ] && echo yes || echo "no ($code $(head -c 200 "$TMP/mput.out"))")"
record "{\"kind\":\"info\",\"mput\":$([ $MPUT -gt 0 ] && echo true || echo false)}"

# run_load url script conns [env...]: wrk until the script writes its done file
run_load() {
    local url=$1 script=$2 c=$3
    shift 3
    rm -f "$TMP/load.done"
    wrk_bg "$TMP/load.out" "$url" "$script" "$c" 3600 BENCH_DONE_FILE="$TMP/load.done" "$@"
    while [ ! -f "$TMP/load.done" ] && kill -0 "$(pid_of wrk)" 2>/dev/null; do sleep 0.2; done
    wrk_bg_stop
    [ -f "$TMP/load.done" ] || log "load did not finish: $(tail -3 "$TMP/load.out")"
}
load_keys() { # from n -> loads both systems, records the times
    local from=$1 n=$2 t0 ms l
    l=$(wait_leader mr 15)
    t0=$(now_ms)
    run_load "http://$(mr_http "$l")" moonraft_load.lua $([ $MPUT -gt 0 ] && echo 4 || echo 256) \
        BENCH_LOAD_FROM="$from" BENCH_LOAD_N="$n" BENCH_MPUT="$MPUT"
    ms=$(($(now_ms) - t0))
    record "{\"kind\":\"load\",\"system\":\"moonraft\",\"keys\":$n,\"ms\":$ms,\"mput\":$MPUT}"
    log "moonraft: loaded $n keys in $ms ms"
    l=$(wait_leader e 15)
    t0=$(now_ms)
    run_load "http://$(e_client "$l")" etcd_load.lua 16 \
        BENCH_LOAD_FROM="$from" BENCH_LOAD_N="$n" BENCH_TXN=128
    ms=$(($(now_ms) - t0))
    record "{\"kind\":\"load\",\"system\":\"etcd\",\"keys\":$n,\"ms\":$ms,\"txn\":128}"
    log "etcd: loaded $n keys in $ms ms"
}

# ---- cells: CPU per request, snapshots per node --------------------------------------
# snaps mr|e -> the snapshot counters of the three nodes, "a,b,c" ("-1" if unknown)
snaps() {
    local i v out=""
    for i in 1 2 3; do
        if [ "$1" = mr ]; then
            v=$(curl -s --max-time 2 "http://$(mr_http "$i")/v1/status" | jq -r '.snapshots_taken // -1' 2>/dev/null)
        else
            v=$(curl -s --max-time 2 "http://$(e_client "$i")/metrics" |
                awk '/^etcd_debugging_snap_save_total_duration_seconds_count/ {print $2}')
        fi
        out="$out${out:+,}${v:--1}"
    done
    echo "$out"
}
snaps_delta() { # before after -> JSON array of per-node differences
    echo "$1 $2" | awk '{ n = split($1, a, ","); split($2, b, ","); s = "[";
        for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") ((a[i] < 0 || b[i] < 0) ? -1 : b[i] - a[i]);
        print s "]" }'
}
sys_pids() { echo "$(pid_of "${1}1") $(pid_of "${1}2") $(pid_of "${1}3")"; }

# etcd's benchmark tool runs a number of requests, not a duration: a short
# probe (grpc_total, outside the cell's CPU and snapshot counts) measures the
# rate, then the cell (run_grpc) asks for rate x seconds.
# grpc_once op conns endpoint total -> the tool's output
grpc_once() {
    local op=$1 c=$2 ep=$3
    shift 3
    if [ "$op" = write ]; then
        "$EBENCH" put --endpoints "$ep" --clients "$c" --conns "$c" --total "$1" \
            --key-size 16 --val-size 100 --key-space-size 100000000 </dev/null 2>&1
    else
        "$EBENCH" range k000000000000000 --consistency l --endpoints "$ep" --clients "$c" \
            --conns "$c" --total "$1" </dev/null 2>&1
    fi
}
grpc_json() { # total: benchmark output on stdin -> WRKJSON-shaped object
    tr '\r' '\n' | awk -v total="$1" '
        /^ *Total:/ { secs = $2 }
        /^ *Slowest:/ { max = $2 }
        /^ *Requests\/sec:/ { rps = $2 }
        /^ *50% in/ { p50 = $3 }
        /^ *99% in/ { p99 = $3 }
        /^Error distribution:/ { inerr = 1; next }
        inerr && /^ *\[[0-9]+\]/ { gsub(/[^0-9]/, "", $1); errs += $1 }
        END {
            if (secs == "") { print "{\"requests\":0,\"errors\":0,\"status_errors\":0,\"seconds\":0,\"rps\":0,\"p50_us\":-1,\"p99_us\":-1,\"max_us\":-1}"; exit }
            ok = total - errs
            printf "{\"requests\":%d,\"errors\":%d,\"status_errors\":0,\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%d,\"p99_us\":%d,\"max_us\":%d}\n",
                total, errs, secs, ok / secs, p50 * 1e6, p99 * 1e6, max * 1e6
        }'
}
grpc_total() { # op conns seconds endpoint -> requests for about that many seconds
    local op=$1 c=$2 d=$3 ep=$4 total
    total=$((c * 40 > 2000 ? c * 40 : 2000))
    total=$(grpc_once "$op" "$c" "$ep" "$total" | grpc_json "$total" |
        jq -r --arg d "$d" '(.rps * ($d | tonumber)) | floor')
    [ "${total:-0}" -ge 1000 ] 2>/dev/null || total=1000
    echo "$total"
}
run_grpc() { # op conns endpoint total -> WRKJSON-shaped object
    local out
    out=$(grpc_once "$@")
    echo "$out" | grpc_json "$4" | grep -q '"seconds":0,' && echo "$out" | tail -3 | sed 's/^/  etcd benchmark: /' >&2
    echo "$out" | grpc_json "$4"
}

# cell sys op conns seconds -> runs one cell against sys's leader, records it
cell() {
    local sys=$1 op=$2 c=$3 d=$4 short=mr l url s cons j s0 s1 c0 c1 total
    [ "$sys" = moonraft ] || short=e
    l=$(wait_leader $short 15) || die "$sys lost its leader"
    case $sys/$op in
    moonraft/write) s=moonraft_put.lua cons= ;;
    moonraft/read) s=moonraft_get.lua cons=linearizable ;;
    etcd/write) s=etcd_put.lua cons= ;;
    etcd/read) s=etcd_range.lua cons=linearizable ;;
    esac
    if [ $sys = moonraft ]; then url="http://$(mr_http "$l")"; else url="http://$(e_client "$l")"; fi
    [ $sys = etcd-grpc ] && total=$(grpc_total "$op" "$c" "$d" "$(e_client "$l")")
    s0=$(snaps $short)
    c0=$(cpu_ticks $(sys_pids $short))
    if [ $sys = etcd-grpc ]; then
        j=$(run_grpc "$op" "$c" "$(e_client "$l")" "$total")
    else
        j=$(run_wrk "$url" "$s" "$c" "$d" BENCH_KEYS="$PRELOAD" BENCH_CONSISTENCY="$cons")
    fi
    c1=$(cpu_ticks $(sys_pids $short))
    s1=$(snaps $short)
    j=$(echo "$j" | jq -c --argjson t "$((c1 - c0))" --argjson hz "$HZ" \
        --argjson snaps "$(snaps_delta "$s0" "$s1")" \
        '. + {cpu_ms: ($t * 1000 / $hz), snapshots: $snaps,
              cpu_us_per_req: (if (.requests - .errors - .status_errors) > 0
                  then ($t * 1e6 / $hz / (.requests - .errors - .status_errors) | . * 10 | round / 10)
                  else -1 end)}')
    record "{\"kind\":\"wrk\",\"system\":\"$sys\",\"op\":\"$op\",\"target\":\"leader\",\"conns\":$c,\"r\":$j}"
    log "$sys $op c=$c: $j"
}

# ---- the matrix ---------------------------------------------------------------------
# writes at $CONNS clients, linearizable reads at $READ_CONNS, all on the
# leader; moonraft, etcd's gRPC API (its own tool), etcd's JSON gateway (wrk)
SYSTEMS="moonraft etcd"
[ -n "$EBENCH" ] && SYSTEMS="moonraft etcd-grpc etcd"
if [ "$ONLY" != big ] && [ "$ONLY" != snap ]; then
    record "{\"kind\":\"info\",\"etcd_grpc\":$([ -n "$EBENCH" ] && echo true || echo false)}"
    load_keys 0 "$PRELOAD"
    for op in write read; do
        cs=$CONNS
        [ $op = read ] && cs=$READ_CONNS
        for c in $cs; do
            for sys in $SYSTEMS; do
                cell $sys $op "$c" "$SECS"
            done
        done
    done
fi

# ---- snapshots A/B ----------------------------------------------------------------------
# The same moonraft write cell twice, each on a fresh cluster: default
# snapshot settings, then snapshots pushed out of the window. The p99 of the
# first should be within 20% of the second's (issue 14).
mr_fresh() { # extra args... -> a fresh 3-node moonraft cluster
    local i
    for i in 1 2 3; do kill -TERM "$(pid_of mr$i)" 2>/dev/null; done
    for i in 1 2 3; do wait "$(pid_of mr$i)" 2>/dev/null; pid_set mr$i ""; done
    for i in 1 2 3; do rm -rf "$TMP/mr$i/data"; done
    for i in 1 2 3; do mr_start "$i" --peers "$MR_PEERS" "$@"; done
    wait_leader mr 30 >/dev/null || die "moonraft: no leader on the fresh cluster"
    sleep 1
}
snap_ab() {
    local mode j
    for mode in default pushed_out; do
        if [ $mode = default ]; then
            mr_fresh
        else
            mr_fresh --snapshot-entries 10000000 --snapshot-log-mb 100000
        fi
        cell moonraft write "$SNAP_CONNS" "$SECS"
        j=$(tail -1 "$RES" | jq -c '.r')
        sed -i '$d' "$RES" # not a matrix row
        record "{\"kind\":\"snap_ab\",\"mode\":\"$mode\",\"conns\":$SNAP_CONNS,\"r\":$j}"
    done
    mr_fresh
}
if [ "$ONLY" = snap ] || [ "$ONLY" = all ]; then
    snap_ab
fi

# ---- failover -----------------------------------------------------------------------
failover() { # mr|e -> records each round
    local sys=$1 r l o bg t0 ms
    for r in $(seq 1 "$FAILOVERS"); do
        l=$(wait_leader "$sys" 30) || die "$sys: no leader before failover round $r"
        sleep 1
        o=$(other_than "$l")
        if [ "$sys" = mr ]; then
            wrk_bg /dev/null "http://$(mr_http "$o")" moonraft_put.lua 1 30
        else
            wrk_bg /dev/null "http://$(e_client "$o")" etcd_put.lua 1 30
        fi
        sleep 1
        t0=$(now_ms)
        kill -9 "$(pid_of $sys$l)"
        wait "$(pid_of $sys$l)" 2>/dev/null
        pid_set $sys$l ""
        while ! "${sys}_put" "$o" "failover-$r" 0.25; do
            [ $(($(now_ms) - t0)) -gt 30000 ] && break
            sleep 0.005
        done
        ms=$(($(now_ms) - t0))
        wrk_bg_stop
        record "{\"kind\":\"failover\",\"system\":\"$([ "$sys" = mr ] && echo moonraft || echo etcd)\",\"round\":$r,\"ms\":$ms}"
        log "$sys failover $r: $ms ms"
        if [ "$sys" = mr ]; then mr_start_static "$l"; else e_start "$l" existing; fi
        sleep 2
    done
}
if [ "$ONLY" != matrix ] && [ "$ONLY" != snap ]; then
    failover mr
    failover e

    # ---- 1M keys: memory, snapshot stall, catch-up stall, disk, restart -----------
    # On fresh clusters: the matrix leaves each system with the keys its write
    # rows inserted (moonraft, being faster, several times more), so "1M keys"
    # would not be the same state for both.
    if [ "$ONLY" != big ]; then
        for sys in mr e; do
            for i in 1 2 3; do kill -TERM "$(pid_of $sys$i)" 2>/dev/null; done
            for i in 1 2 3; do wait "$(pid_of $sys$i)" 2>/dev/null; pid_set $sys$i ""; done
            for i in 1 2 3; do rm -rf "$TMP/$sys$i/data"; done
        done
        for i in 1 2 3; do mr_start_static "$i"; done
        for i in 1 2 3; do e_start "$i"; done
        wait_leader mr 30 >/dev/null || die "moonraft: no leader on the fresh cluster"
        wait_leader e 30 >/dev/null || die "etcd: no leader on the fresh cluster"
        log "fresh clusters for the 1M-key part"
    fi
    load_keys 1000000000 "$BIGKEYS"
    sleep 3
    for i in 1 2 3; do
        record "{\"kind\":\"rss_full\",\"system\":\"moonraft\",\"node\":$i,\"kib\":$(rss_kib "$(pid_of mr$i)")}"
        record "{\"kind\":\"rss_full\",\"system\":\"etcd\",\"node\":$i,\"kib\":$(rss_kib "$(pid_of e$i)")}"
    done

    # snapshot stall: a 1-connection writer runs while every node snapshots
    l=$(wait_leader mr 30) || die "moonraft: no leader"
    base=$(run_wrk "http://$(mr_http "$l")" moonraft_put.lua 1 3)
    record "{\"kind\":\"stall_baseline\",\"system\":\"moonraft\",\"r\":$base}"
    for i in 1 2 3; do
        v=$(curl -s "http://$(mr_http "$i")/v1/status" | jq -r '.snapshots_taken')
        eval "before_$i=\$v"
    done
    wrk_bg "$TMP/stall.out" "http://$(mr_http "$l")" moonraft_put.lua 1 60
    sleep 2
    t0=$(now_ms)
    for i in 1 2 3; do curl -s -o /dev/null -X POST "http://$(mr_http "$i")/v1/snapshot"; done
    done_n=0
    while [ $done_n -lt 3 ] && [ $(($(now_ms) - t0)) -lt 55000 ]; do
        done_n=0
        for i in 1 2 3; do
            s=$(curl -s "http://$(mr_http "$i")/v1/status" | jq -r '.snapshots_taken')
            [ "${s:-0}" -gt "$(eval "echo \${before_$i:-0}")" ] 2>/dev/null && done_n=$((done_n + 1))
        done
        sleep 0.2
    done
    snap_ms=$(($(now_ms) - t0))
    log "moonraft: snapshots of $BIGKEYS keys on 3 nodes done in $snap_ms ms ($done_n/3)"
    sleep 1
    wrk_bg_stop
    j=$(sed -n 's/^WRKJSON //p' "$TMP/stall.out" | tail -1)
    record "{\"kind\":\"stall_snapshot\",\"system\":\"moonraft\",\"snapshot_ms\":$snap_ms,\"nodes_done\":$done_n,\"r\":${j:-null}}"
    log "moonraft snapshot stall: ${j:-none}"

    # catch-up stall: n4 joins and catches up by snapshot under a 1-connection writer
    wrk_bg "$TMP/stall.out" "http://$(mr_http "$l")" moonraft_put.lua 1 60
    sleep 2
    t0=$(now_ms)
    mr_start 4 --join "$(mr_http "$l")"
    caught=0
    while [ $(($(now_ms) - t0)) -lt 55000 ]; do
        s=$(curl -s --max-time 1 "http://$(mr_http 4)/v1/status")
        if [ "$(echo "$s" | jq -r '(.snapshots_installed // 0) >= 1 and .applied >= .commit and .commit > 0' 2>/dev/null)" = true ]; then
            caught=1
            break
        fi
        sleep 0.1
    done
    catch_ms=$(($(now_ms) - t0))
    sleep 1
    wrk_bg_stop
    j=$(sed -n 's/^WRKJSON //p' "$TMP/stall.out" | tail -1)
    record "{\"kind\":\"stall_catchup\",\"system\":\"moonraft\",\"catchup_ms\":$catch_ms,\"caught_up\":$caught,\"r\":${j:-null}}"
    log "moonraft catch-up of n4 in $catch_ms ms (caught=$caught), stall: ${j:-none}"
    curl -s -o /dev/null -X DELETE "http://$(mr_http "$l")/v1/members/n4"
    sleep 1
    kill -TERM "$(pid_of mr4)" 2>/dev/null
    wait "$(pid_of mr4)" 2>/dev/null
    pid_set mr4 ""

    # stop everything, measure disk, restart, time to the first write
    for sys in mr e; do
        for i in 1 2 3; do kill -TERM "$(pid_of $sys$i)" 2>/dev/null; done
        for i in 1 2 3; do
            wait "$(pid_of $sys$i)" 2>/dev/null
            pid_set $sys$i ""
        done
        for i in 1 2 3; do
            b=$(du -sb "$TMP/$sys$i/data" | cut -f1)
            record "{\"kind\":\"disk\",\"system\":\"$([ $sys = mr ] && echo moonraft || echo etcd)\",\"node\":$i,\"bytes\":$b}"
        done
    done
    for sys in mr e; do
        t0=$(now_ms)
        for i in 1 2 3; do
            if [ $sys = mr ]; then mr_start_static "$i"; else e_start "$i" existing; fi
        done
        ok=0
        while [ $(($(now_ms) - t0)) -lt 120000 ]; do
            if "${sys}_put" 1 restart 1; then
                ok=1
                break
            fi
            sleep 0.01
        done
        ms=$(($(now_ms) - t0))
        record "{\"kind\":\"restart\",\"system\":\"$([ $sys = mr ] && echo moonraft || echo etcd)\",\"keys\":$BIGKEYS,\"ms\":$ms,\"ok\":$ok}"
        log "$sys restart with $BIGKEYS keys -> first write: $ms ms"
    done
fi

# ---- report -------------------------------------------------------------------------
mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ).json"
jq -s --arg secs "$SECS" --arg host "$(uname -nr)" --arg cpus "$(nproc)" \
    '{secs_per_run: ($secs|tonumber), host: $host, cpus: ($cpus|tonumber), rows: .}' "$RES" >"$OUT"
sh "$ROOT/bench/report.sh" "$OUT"
echo "results: $OUT"
