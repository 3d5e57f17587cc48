#!/bin/sh
# Long chaos rounds: `make chaos` -> sh scripts/chaos.sh <build dir>.
# CHAOS_MINUTES (default 30) is split over alternating 3- and 5-node rounds
# of MR_CHAOS_SECONDS (default 120) each; prints a summary at the end.
set -u
BUILD=${1:-build}
MINUTES=${CHAOS_MINUTES:-30}
ROUND=${MR_CHAOS_SECONDS:-120}
BIN="$BUILD/chaos_test_chaos"
[ -x "$BIN" ] || { echo "chaos: $BIN not built" >&2; exit 2; }
OUT=${CHAOS_OUT:-$(mktemp -d /tmp/mr-chaos.XXXXXX)}
end=$(( $(date +%s) + MINUTES * 60 ))
i=0; bad=0
while [ "$(date +%s)" -lt "$end" ]; do
  i=$((i + 1))
  seed=${MR_CHAOS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
  log="$OUT/round-$i-seed-$seed.log"
  MR_CHAOS_SEED=$seed MR_CHAOS_SECONDS=$ROUND MR_CHAOS_HISTORY="$OUT/round-$i.history" \
    "$BIN" three_node_cluster_stays_linearizable_under_faults \
    five_node_cluster_stays_linearizable_under_faults >"$log" 2>&1 || { bad=$((bad + 1)); echo "round $i (seed $seed): FAILED, see $log"; }
  grep -E '^(ops=|faults:|VIOLATION|state:)' "$log" | sed "s/^/round $i: /"
done
echo "==== summary: $i rounds, $bad failed; logs in $OUT"
awk '/^ops=/{for(f=1;f<=NF;f++){split($f,a,"=");if(a[1]~/^(ops|ok|fail|info)$/)s[a[1]]+=a[2]} c+=1; t+=$(NF-4)} END{printf "operations: %d (ok %d, fail %d, info %d); histories checked: %d\n", s["ops"],s["ok"],s["fail"],s["info"],c}' "$OUT"/round-*.log
awk '/^faults:/{for(f=2;f<=NF;f++){split($f,a,"=");s[a[1]]+=a[2]}} END{printf "faults:"; for(k in s) printf " %s=%d", k, s[k]; printf "\n"}' "$OUT"/round-*.log
grep -h '^ops=' "$OUT"/round-*.log | sed 's/.*check \([0-9.]*\) s.*/\1/' | awk '{n++; s+=$1; if($1>m)m=$1} END{printf "check time per history: mean %.3f s, max %.3f s\n", n?s/n:0, m}'
grep -h 'linearizable\|NOT LINEARIZABLE' "$OUT"/round-*.log | grep -c 'NOT LINEARIZABLE' | sed 's/^/violating keys: /'
[ "$bad" -eq 0 ]
