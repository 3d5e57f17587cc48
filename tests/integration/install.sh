#!/bin/sh
# integration_install: `cmake --install` into a temporary prefix, then run a
# node and the console from a directory with no lua/ around, using only the
# installed files: the installed config, a write and a read over HTTP, the
# console's built-in Lua, then stop the node by its PID.
# Usage: install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mr-install.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    if [ -f "$tmp/node.log" ]; then
        echo "--- node log" >&2
        cat "$tmp/node.log" >&2
    fi
    exit 1
}

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install"; }
for f in bin/moonraft etc/moonraft/moonraft.lua lib/systemd/system/moonraft.service \
    share/moonraft/conf/node1.lua share/moonraft/examples/bank.lua \
    share/moonraft/lua/kv.lua share/doc/moonraft/README.md share/doc/moonraft/operations.md; do
    [ -f "$prefix/$f" ] || fail "not installed: $f"
done
grep -q '^ExecStart=.*/moonraft --config .*/moonraft/moonraft.lua$' \
    "$prefix/lib/systemd/system/moonraft.service" || fail "unit has no ExecStart"
grep -q '^User=moonraft$' "$prefix/lib/systemd/system/moonraft.service" || fail "unit has no User"

# Somewhere with no lua/ and no conf/: the node must need neither.
run=$tmp/elsewhere
mkdir -p "$run"
cd "$run"

# Ports from the PID, so that parallel runs rarely meet; 127.0.0.1 only. A
# port taken by another test (the range overlaps the ephemeral one) makes the
# node exit at once with a bind error: try the next pair, up to 5 times.
attempt=0
while :; do
    base=$((20000 + (($$ + attempt * 7919) % 2000) * 10))
    http=127.0.0.1:$base
    raft=127.0.0.1:$((base + 1))
    rm -rf "$run/data"
    env -u MOONRAFT_LUA_DIR "$prefix/bin/moonraft" --config "$prefix/etc/moonraft/moonraft.lua" \
        --data-dir "$run/data" --http-addr "$http" --raft-addr "$raft" --fsync false \
        >"$tmp/node.log" 2>&1 &
    pid=$!
    i=0
    until curl -sf "http://$http/v1/status" 2>/dev/null | grep -q '"role":"leader"'; do
        i=$((i + 1))
        [ $i -lt 300 ] || fail "no leader after 30 s"
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && break
    wait "$pid" 2>/dev/null || true
    pid=""
    attempt=$((attempt + 1))
    grep -qi "address already in use" "$tmp/node.log" && [ $attempt -lt 5 ] && continue
    fail "the node exited"
done

out=$(curl -s -X PUT "http://$http/v1/kv/installed" -d '{"from":"anywhere"}' -w ' %{http_code}')
case "$out" in *" 200") ;; *) fail "PUT: $out" ;; esac
out=$(curl -s "http://$http/v1/kv/installed" -w ' %{http_code}')
case "$out" in *'"value":{"from":"anywhere"}'*" 200") ;; *) fail "GET: $out" ;; esac

# The built-in kv script is lua/kv.lua byte for byte: same hash.
want=$(sha256sum "$src/lua/kv.lua" | cut -d' ' -f1)
status=$(curl -s "http://$http/v1/status")
case "$status" in *"\"hash\":\"$want\""*) ;; *) fail "script hash is not lua/kv.lua's ($want): $status" ;; esac
grep -q 'state machine kv.lua (built in) loaded' "$tmp/node.log" || fail "no built-in script log line"

# The console runs its built-in console.lua from here too.
out=$(env -u MOONRAFT_LUA_DIR "$prefix/bin/moonraft" console "$http" \
    -e 'print(kv.get("installed").from)' 2>&1) || fail "console: $out"
[ "$out" = anywhere ] || fail "console printed: $out"

kill "$pid"
wait "$pid" || fail "node exit status $? after SIGTERM"
pid=""
echo "1 passed, 0 failed"
