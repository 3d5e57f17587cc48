#!/bin/sh
# `make bench`: every benchmark, one after the other. Numbers depend on the
# machine; compare runs on the same machine (results are also written as JSON
# under bench/results/). Environment knobs:
#   MR_BENCH_KEYS       keys loaded by the cluster benchmark (default 1000000)
#   MR_BENCH_FAILOVERS  leader kills measured (default 10)
set -u
BUILD=${1:-build}
status=0
for b in bench_wal bench_sm_snapshot bench_cluster; do
    if [ -x "$BUILD/bench/$b" ]; then
        echo "==== $b"
        "$BUILD/bench/$b" || status=1
    fi
done
exit $status
