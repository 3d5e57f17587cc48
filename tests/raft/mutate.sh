#!/bin/sh
# Mutation check of the Raft core (manual; not run by ctest): breaks one rule
# at a time, rebuilds, runs the raft test binaries and says which caught it,
# then restores the file. Usage: sh tests/raft/mutate.sh [build-dir]
# Needs a clean src/raft (it uses `git checkout` to restore).
set -u
cd "$(dirname "$0")/../.."
B=${1:-build}
mutate() { # name file old new
    name=$1 file=$2
    python3 - "$file" "$3" "$4" <<'PY' || { echo "$name: pattern not found"; return; }
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
if s.count(old) != 1: sys.exit(1)
open(p, 'w').write(s.replace(old, new))
PY
    if cmake --build "$B" -j2 >/dev/null 2>&1; then
        for t in "$B"/raft_test_*; do
            out=$(MR_SCHEDULES=10000 "$t" 2>&1)
            failed=$(echo "$out" | grep -E '^\[  FAILED  \] test_' | sed 's/.*\] //' | sort -u | tr '\n' ' ')
            why=$(echo "$out" | grep -m1 'SIM FAILURE' | cut -c1-150)
            echo "$name: $(basename "$t"): ${failed:-NOT CAUGHT} $why"
        done
    else
        echo "$name: build failed"
    fi
    git checkout -q -- "$file"
}
mutate M1-commit-counts-old-term-entries src/raft/raft_replication.c \
    "    if (log_term(r, idx) != r->term) {" "    if (0) {"
mutate M2-vote-twice-in-a-term src/raft/raft_election.c \
    "(r->vote == 0 && r->leader == 0)" "(r->leader == 0)"
mutate M3-no-check-quorum-step-down src/raft/raft_election.c \
    "                become_follower(r, r->term, 0);
                return;" "                (void)0;"
mutate M4-read-index-without-heartbeat-round src/raft/raft_read.c \
    "    if (is_lease && r->opts.lease_reads && r->opts.check_quorum && r->transferee == 0 &&
        committed_in_term(r) && lease_valid(r)) {" \
    "    if ((is_lease || 1) && committed_in_term(r) && (lease_valid(r) || 1)) {"
mutate M4b-read-confirmed-by-a-round-sent-before-it src/raft/raft_read.c \
    "    rd->round = r->read_round + 1; /* a round sent after the read arrived */" \
    "    rd->round = r->read_round;"
mutate M4c-lease-read-without-lease-check src/raft/raft_read.c \
    "        committed_in_term(r) && lease_valid(r)) {" \
    "        committed_in_term(r) && (lease_valid(r) || 1)) {"
mutate M5-append-ack-before-persist src/raft/raft.c \
    "           type == MR_RAFT_MSG_APPEND_RESP || type == MR_RAFT_MSG_SNAPSHOT_RESP;" \
    "           type == MR_RAFT_MSG_SNAPSHOT_RESP;"
mutate M6-vote-grant-before-persist src/raft/raft.c \
    "    return type == MR_RAFT_MSG_VOTE || type == MR_RAFT_MSG_VOTE_RESP ||" \
    "    return type == MR_RAFT_MSG_VOTE ||"
mutate M7-leader-counts-its-unpersisted-write src/raft/raft_replication.c \
    "    return p->id == r->id ? r->persisted : p->match;" \
    "    return p->id == r->id ? log_last_index(r) : p->match;"
mutate M8-self-elected-leader-sends-before-term-durable src/raft/raft_replication.c \
    "        r->term_unsafe = 1;" "        r->term_unsafe = 0;"
mutate M9-no-fast-backtracking-hint src/raft/raft_replication.c \
    "            if (m->hint_term > 0) hint = log_find_conflict_by_term(r, hint, m->hint_term);" \
    "            hint = rejected - 1;"
mutate M10-evict-ignores-the-wal-persisted-index src/raft/raft_log.c \
    "    mr_index limit = r->wal_persisted;" "    mr_index limit = (mr_index)-1;"
mutate M11-evict-by-snapshot-raised-persisted src/raft/raft_log.c \
    "    mr_index limit = r->wal_persisted;" "    mr_index limit = r->persisted;"
mutate M12-evict-ignores-applied src/raft/raft_log.c \
    "    if (r->applied < limit) limit = r->applied;" ""
mutate M13-evict-config-entries src/raft/raft_log.c \
    "        if (e->type == MR_RAFT_ENTRY_CONFIG || e->data == NULL ||" \
    "        if (e->data == NULL ||"
mutate M14-slice-ignores-evicted-len src/raft/raft_log.c \
    "        size_t len = e->evicted ? e->evicted_len : payload_len(e);" \
    "        size_t len = payload_len(e);"
mutate M15-evict-ignores-up-to src/raft/raft_log.c \
    "    if (up_to < limit) limit = up_to;" "    (void)up_to;"
cmake --build "$B" -j2 >/dev/null 2>&1
