#!/bin/sh
# Long chaos rounds: `make chaos` -> sh scripts/chaos.sh <build dir>.
# CHAOS_MINUTES (default 30) is filled with alternating 3- and 5-node rounds
# of MR_CHAOS_SECONDS (default 120) each, every round with a fresh seed (or
# MR_CHAOS_SEED for all); prints a summary at the end: operations, faults by
# kind, verdicts, check time per history, recovery times. Logs and histories
# go to CHAOS_OUT (default: a new /tmp/mr-chaos.XXXXXX).
set -u
BUILD=${1:-build}
MINUTES=${CHAOS_MINUTES:-30}
ROUND=${MR_CHAOS_SECONDS:-120}
BIN="$BUILD/chaos_test_chaos"
[ -x "$BIN" ] || { echo "chaos: $BIN not built" >&2; exit 2; }
OUT=${CHAOS_OUT:-$(mktemp -d /tmp/mr-chaos.XXXXXX)}
mkdir -p "$OUT"
start=$(date +%s)
end=$((start + MINUTES * 60))
i=0; bad=0; LOGS=""
while [ "$(date +%s)" -lt "$end" ]; do
  i=$((i + 1))
  if [ $((i % 2)) -eq 1 ]; then nodes=3; t=three_node_cluster_stays_linearizable_under_faults
  else nodes=5; t=five_node_cluster_stays_linearizable_under_faults; fi
  seed=${MR_CHAOS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
  log="$OUT/round-$i-${nodes}n-seed-$seed.log"
  LOGS="$LOGS $log" # only this run's rounds count (CHAOS_OUT may hold older ones)
  MR_CHAOS_SEED=$seed MR_CHAOS_SECONDS=$ROUND MR_CHAOS_HISTORY="$OUT/round-$i.history" \
    "$BIN" "$t" >"$log" 2>&1 || { bad=$((bad + 1)); echo "round $i ($nodes nodes, seed $seed): FAILED, see $log"; }
  grep -E '^(ops=|VIOLATION|CHECK FAILED|LOST WRITE|state: nodes did NOT)|RESTART FAILED|POWER CUT FAILED' "$log" | sed "s/^/round $i ($nodes nodes): /"
done
took=$(( $(date +%s) - start ))
[ -n "$LOGS" ] || { echo "chaos: no rounds ran"; exit 2; }
echo "==== chaos summary: $i rounds in ${took} s (${ROUND} s of faults each), $bad failed; logs in $OUT"
# ops=N ok=N fail=N info=N; keys=N bad=N; check X s; recover X s; recover_max X s
awk '/^ops=/{
  for (f = 1; f <= NF; f++) { x = $f; sub(/;$/, "", x); split(x, a, "="); if (a[1] ~ /^(ops|ok|fail|info|keys|bad)$/) s[a[1]] += a[2] }
  for (f = 1; f <= NF; f++) {
    if ($f == "check") { c = $(f + 1) + 0; ct += c; if (c > cm) cm = c }
    if ($f == "recover") { r = $(f + 1) + 0; rt += r; if (r > rm) rm = r }
    if ($f == "recover_max") { r = $(f + 1) + 0; if (r > wm) wm = r }
  }
  h++
}
END {
  printf "operations: %d (ok %d, fail %d, info %d)\n", s["ops"], s["ok"], s["fail"], s["info"]
  printf "verdicts: %d histories, %d keys checked, %d not linearizable\n", h, s["keys"], s["bad"]
  printf "check time per history: mean %.3f s, max %.3f s\n", h ? ct / h : 0, cm
  printf "recovery after the last fault of a round: mean %.3f s, max %.3f s; worst after any fault: %.3f s\n", h ? rt / h : 0, rm, wm
}' $LOGS
awk '/^faults:/{ for (f = 2; f <= NF; f++) { split($f, a, "="); s[a[1]] += a[2]; t += a[2] } }
END { printf "faults: %d in all:", t; n = 0; for (k in s) printf " %s=%d", k, s[k]; printf "\n" }' $LOGS
awk '/^extra:/{ for (f = 2; f <= NF; f++) { split($f, a, "="); if (a[1] != "members_ok") s[a[1]] += a[2] } }
END { printf "also:"; for (k in s) printf " %s=%d", k, s[k]; printf "\n" }' $LOGS
grep -h 'slow recovery\|NO leader serving' $LOGS | sed 's/^ */slow: /' | head -20
[ "$bad" -eq 0 ]
