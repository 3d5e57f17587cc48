#!/bin/sh
# bench/etcd-benchmark.sh: prints the path of etcd's own gRPC benchmark tool
# (`benchmark put`, `benchmark range` from etcd's tools/benchmark), building
# it first if needed. bench/compare.sh uses it as the gRPC anchor beside the
# JSON gateway (wrk).
#
# It builds offline from Debian packages, the same etcd as the etcd-server
# package (3.4.23): the source package (apt-get source etcd, which needs a
# deb-src line: written to /etc/apt/sources.list.d/moonraft-deb-src.sources
# when none exists) and its build dependencies (apt-get build-dep etcd:
# golang-go and the golang-*-dev packages, whose Go sources live under
# /usr/share/gocode). The build is GOPATH mode (GO111MODULE=off) with
# go.etcd.io/etcd linked to the source tree. Every step is skipped when done:
# the binary is cached as $MR_CACHE/etcd-benchmark-<version>
# (default ~/.cache/moonraft), so the second call costs nothing.
#
# Exit 0 and the binary's path on stdout, or exit 1 with the reason on
# stderr (then compare.sh reports the gateway anchor alone).
set -u
CACHE=${MR_CACHE:-${HOME:-/tmp}/.cache/moonraft}
VERSION=${MR_ETCD_VERSION:-3.4.23}
BIN="$CACHE/etcd-benchmark-$VERSION"
log() { printf '[etcd-benchmark] %s\n' "$*" >&2; }
fail() { log "cannot build etcd's benchmark tool: $*"; exit 1; }

if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
apt_install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2
}

mkdir -p "$CACHE/src" || fail "mkdir $CACHE/src"
SRC=$(ls -d "$CACHE/src/etcd-$VERSION" 2>/dev/null)
if [ -z "$SRC" ] || [ ! -d "$SRC/tools/benchmark" ]; then
    command -v dpkg-source >/dev/null 2>&1 || apt_install dpkg-dev || fail "apt-get install dpkg-dev"
    if ! grep -rqs '^[^#]*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding a deb-src line for the Debian archive"
        suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$suite" | $SUDO tee /etc/apt/sources.list.d/moonraft-deb-src.sources >/dev/null ||
            fail "cannot write /etc/apt/sources.list.d/moonraft-deb-src.sources"
        $SUDO apt-get update >&2 || fail "apt-get update"
    fi
    (cd "$CACHE/src" && apt-get source "etcd=$VERSION*" >&2 || apt-get source etcd >&2) ||
        fail "apt-get source etcd"
    SRC=$(ls -d "$CACHE/src/etcd-$VERSION" 2>/dev/null)
    [ -n "$SRC" ] && [ -d "$SRC/tools/benchmark" ] ||
        fail "no etcd-$VERSION/tools/benchmark in $CACHE/src (another version in the archive?)"
fi
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/go.uber.org ]; then
    log "installing etcd's build dependencies (apt-get build-dep etcd)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y etcd >&2 ||
        fail "apt-get build-dep etcd"
fi
GP="$CACHE/gopath"
mkdir -p "$GP/src/go.etcd.io" || fail "mkdir $GP"
ln -sfn "$SRC" "$GP/src/go.etcd.io/etcd"
log "building $BIN (GOPATH mode, Debian's Go packages)"
(cd "$GP/src/go.etcd.io/etcd" &&
    GOPATH="$GP:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOCACHE="$CACHE/gocache" \
        go build -o "$BIN.tmp" ./tools/benchmark >&2) || fail "go build ./tools/benchmark failed"
mv "$BIN.tmp" "$BIN" || fail "mv"
echo "$BIN"
