#!/usr/bin/env bash
# Local stand-ins for the base images the deployment uses, for the deployment tests on a
# machine that cannot pull from Docker Hub. Never tagged with an official image's name:
#   sessions-test/debian:bookworm   debootstrap --variant=minbase of Debian 12
#   sessions-test/python:3.11       Debian's Python 3.11 (for the Dockerfile's PYTHON_IMAGE)
#   sessions-test/tarantool:2.6     Debian's Tarantool 2.6 (for compose's TARANTOOL_IMAGE)
#   sessions-test/tarantool:2.11    with TARANTOOL_2_11_BIN set: that binary, a Tarantool 2.11
#                                   built for Debian 12 (rebuilt when the binary changes)
#   sessions-test/tarantool-vshard:2.11
#                                   with VSHARD_DIR set too: that one and the vshard there
#                                   (the official image's rock), for dc.sharded.yml
# The rootfs trusts the host's certificate authorities and uses the host's Debian mirror,
# so apt and pip inside the builds reach the package registries the host reaches.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have sessions-test/debian:bookworm; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    cp -a /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/"
    rm -f "$rootfs"/etc/apt/sources.list.d/*.disabled* "$rootfs/etc/apt/sources.list"
    cp -a /etc/apt/apt.conf.d/99artifact-registry "$rootfs/etc/apt/apt.conf.d/" 2>/dev/null || true
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    mkdir -p "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" -c . | docker import - sessions-test/debian:bookworm >/dev/null
fi
have sessions-test/python:3.11 || docker build -q -t sessions-test/python:3.11 -f "$here/python.Dockerfile" "$here" >/dev/null
have sessions-test/tarantool:2.6 || docker build -q -t sessions-test/tarantool:2.6 -f "$here/tarantool.Dockerfile" "$here" >/dev/null
if [ -n "${TARANTOOL_2_11_BIN:-}" ]; then
    context=$(mktemp -d)
    cp "$TARANTOOL_2_11_BIN" "$context/tarantool"
    # Docker's cache makes this a no-op while the binary stays the same.
    built=0
    docker build -q -t sessions-test/tarantool:2.11 -f "$here/tarantool-2.11.Dockerfile" "$context" \
        >/dev/null || built=$?
    rm -rf "$context"
    [ "$built" = 0 ]
    if [ -n "${VSHARD_DIR:-}" ]; then
        docker build -q -t sessions-test/tarantool-vshard:2.11 -f "$here/tarantool-vshard.Dockerfile" \
            "$VSHARD_DIR" >/dev/null
    fi
fi
echo "stand-in base images ready"
