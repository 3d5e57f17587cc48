#!/bin/sh
# Install the Debian packages moonraft needs, but only those not yet installed.
# Safe to run repeatedly; apt-get runs only when something is missing.
set -eu
PKGS="build-essential cmake pkg-config liblua5.4-dev lua5.4 libuv1-dev lua-cjson-dev \
libcmocka-dev libhttp-parser-dev libedit-dev libmd-dev clang libclang-rt-dev curl \
libssl-dev openssl libjemalloc-dev"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    exit 0
fi
echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
