#!/bin/sh
# `make bench`: the micro benchmarks (WAL, state machine snapshot), then the
# side-by-side comparison with etcd (bench/compare.sh: prints the table of
# issue 7 and writes bench/results/<time>.json). Numbers depend on the
# machine; compare runs made on the same machine. Environment knobs:
#   MR_BENCH_ONLY       "micro" for the micro benchmarks only, "compare" for
#                       the comparison only (also: "matrix", "snap", "big",
#                       see bench/compare.sh)
#   MR_BENCH_SECONDS    seconds per cell (default 20)
#   MR_BENCH_CLUSTER=1  also run bench_cluster (moonraft alone: 1M keys,
#                       failover, snapshot stall, restart; MR_BENCH_KEYS,
#                       MR_BENCH_FAILOVERS)
set -u
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
status=0
only=${MR_BENCH_ONLY:-all}
if [ "$only" != compare ] && [ "$only" != matrix ] && [ "$only" != big ] && [ "$only" != snap ]; then
    for b in bench_wal bench_sm_snapshot; do
        if [ -x "$BUILD/bench/$b" ]; then
            echo "==== $b"
            "$BUILD/bench/$b" || status=1
        fi
    done
    if [ "${MR_BENCH_CLUSTER:-0}" = 1 ] && [ -x "$BUILD/bench/bench_cluster" ]; then
        echo "==== bench_cluster"
        "$BUILD/bench/bench_cluster" || status=1
    fi
fi
if [ "$only" != micro ]; then
    echo "==== moonraft vs etcd (bench/compare.sh)"
    [ "$only" = compare ] && only=all
    MR_BENCH_ONLY=$only sh "$ROOT/bench/compare.sh" "$BUILD" || status=1
fi
exit $status
