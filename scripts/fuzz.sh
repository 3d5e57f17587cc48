#!/bin/sh
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang, ASan and
# UBSan in build-fuzz/, then runs each for SECONDS and prints executions and
# exec/s per target. Fails (exit 1) if any target crashes, leaks, times out or
# trips a check; the reproducer is saved as build-fuzz/artifacts/<target>/*.
#
#   sh scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 s, all targets)
#
# Environment: FUZZ_JOBS (build parallelism, default 2), FUZZ_TIMEOUT (seconds
# one input may take before it counts as a hang, default 25), FUZZ_BUILD
# (build dir, default build-fuzz), FUZZ_NICE (nice level, default 10).
# New inputs go to build-fuzz/corpus/<target>/ (not the checked-in seeds in
# tests/fuzz/corpus/<target>/, which are read too). See docs/fuzzing.md.
set -eu
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
[ $# -gt 0 ] && shift
BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-2}
TIMEOUT=${FUZZ_TIMEOUT:-25}
NICE=${FUZZ_NICE:-10}

if [ $# -gt 0 ]; then
    TARGETS="$*"
else
    TARGETS=$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c | sed 's/^fuzz_//'; done)
fi

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang not found (run scripts/deps.sh)" >&2
    exit 1
fi

mkdir -p "$BUILD"
CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMR_FUZZ=ON -DMR_ASAN=ON -DMR_UBSAN=ON >"$BUILD/cmake.log" 2>&1 ||
    { cat "$BUILD/cmake.log" >&2; exit 1; }
for t in $TARGETS; do
    nice -n "$NICE" cmake --build "$BUILD" -j "$JOBS" --target "fuzz_$t"
done

# A small quarantine and periodic release keep the RSS of the Lua targets
# (up to 64 MiB of Lua heap per input) under -rss_limit_mb: ASan's allocator
# otherwise retains freed memory across size classes (not a leak: LeakSanitizer
# stays on).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1:quarantine_size_mb=16:allocator_release_to_os_interval_ms=500}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

summary=""
failed=""
for t in $TARGETS; do
    work="$BUILD/corpus/$t"
    art="$BUILD/artifacts/$t"
    log="$BUILD/fuzz_$t.log"
    mkdir -p "$work" "$art"
    echo "fuzz: $t for ${SECONDS_EACH}s (log: $log)"
    rc=0
    nice -n "$NICE" "$BUILD/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" \
        -rss_limit_mb=3072 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$art/" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | sed 's/cov: //')
    line=$(printf '%-10s %12s execs %8s exec/s  cov %6s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}")
    if [ "$rc" -ne 0 ]; then
        line="$line  FAILED (exit $rc)"
        failed="$failed $t"
        echo "fuzz: $t FAILED; reproducer(s):" >&2
        ls -1 "$art"/* 2>/dev/null >&2 || true
        grep -E 'ERROR|SUMMARY|check failed|deadly signal|Test unit written' "$log" | head -n 20 >&2 || true
        echo "replay: $BUILD/fuzz_$t <reproducer>   (or build/replay_fuzz_$t <reproducer>)" >&2
    fi
    summary="$summary$line
"
done

echo "fuzz: summary (${SECONDS_EACH}s per target)"
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzz: FAILED:$failed" >&2
    exit 1
fi
