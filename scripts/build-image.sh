#!/usr/bin/env bash
# Builds `wharf:dev`: a fully static release binary in a `FROM scratch` image.
#
#   scripts/build-image.sh [TAG]        # TAG defaults to wharf:dev
#
# The binary is built for an explicit --target so that RUSTFLAGS (+crt-static) reach only the
# binary and its dependencies, not build scripts or proc macros (which must stay dynamic host
# programs). CXXSTDLIB makes RocksDB link libstdc++ statically; without it the result is silently
# dynamic. A separate target dir keeps these flags from invalidating the main (debug) one.
set -euo pipefail

tag="${1:-wharf:dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
target_dir="${WHARF_STATIC_TARGET_DIR:-$HOME/.cache/wharf-target-static}"

if command -v sccache >/dev/null 2>&1 && [ -z "${RUSTC_WRAPPER:-}" ]; then
    export RUSTC_WRAPPER=sccache
fi
# (cc-rs also routes RocksDB's C++ through sccache when it is the RUSTC_WRAPPER, and sccache
# caches it across target dirs, so a rebuild here after a debug build is minutes, not ten.)

echo "building the static binary (target dir $target_dir)" >&2
(
    cd "$root"
    RUSTFLAGS='-C target-feature=+crt-static' \
    CXXSTDLIB='static:-bundle=stdc++' \
    CARGO_TARGET_DIR="$target_dir" \
        cargo build --release --locked --target "$target" --bin wharf
)
binary="$target_dir/$target/release/wharf"

# Refuse a dynamic binary: in a scratch image it would fail with a bare "no such file or directory".
description="$(file -b "$binary")"
echo "$description" >&2
case "$description" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "error: $binary is not statically linked" >&2; exit 1 ;;
esac
# ldd says "statically linked" for a static-pie and "not a dynamic executable" for a static exec.
libraries="$(ldd "$binary" 2>&1 || true)"
echo "ldd: $libraries" >&2
case "$libraries" in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) echo "error: ldd found dynamic dependencies in $binary" >&2; exit 1 ;;
esac

# A minimal build context: the binary, the Dockerfile, and the data dir owned by the runtime user.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
install -m 0755 "$binary" "$context/wharf"
strip "$context/wharf" 2>/dev/null || true
cp "$root/Dockerfile" "$context/Dockerfile"
mkdir -p "$context/rootfs/data" "$context/rootfs/tmp"
chmod 0755 "$context/rootfs/data"
chmod 1777 "$context/rootfs/tmp"

docker build -t "$tag" "$context"
docker image ls "$tag"
