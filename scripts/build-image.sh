#!/usr/bin/env bash
# Builds `wharf:dev`: a `FROM scratch` image of the wharf binary.
#
#   scripts/build-image.sh [TAG]                  a fully static release binary (what you ship)
#   scripts/build-image.sh --binary PATH [TAG]    an already built binary instead, e.g. the debug
#                                                 one `cargo nextest run` builds anyway (.ci/run
#                                                 uses this: a second, release build of the whole
#                                                 tree cost a fresh machine 27 of its CI minutes)
# TAG defaults to wharf:dev.
#
# The static binary is built for an explicit --target so that RUSTFLAGS (+crt-static) reach only the
# binary and its dependencies, not build scripts or proc macros (which must stay dynamic host
# programs). CXXSTDLIB makes RocksDB link libstdc++ statically; without it the result is silently
# dynamic. A separate target dir keeps these flags from invalidating the main (debug) one.
# A given binary that is dynamic brings its shared libraries and loader, copied from this machine
# to the same paths in the image (the image is still scratch plus exactly what the binary loads).
set -euo pipefail

given=""
if [ "${1:-}" = "--binary" ]; then
    given="${2:?--binary needs a path}"
    shift 2
fi
tag="${1:-wharf:dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
target_dir="${WHARF_STATIC_TARGET_DIR:-$HOME/.cache/wharf-target-static}"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/data" "$context/rootfs/tmp"

if [ -n "$given" ]; then
    binary="$given"
    [ -x "$binary" ] || { echo "error: $binary is not an executable" >&2; exit 1; }
    echo "$(file -b "$binary")" >&2
    # Every shared object the loader maps for it (and the loader itself), at the same paths.
    libraries="$(ldd "$binary" 2>&1 || true)"
    echo "ldd: $libraries" >&2
    for library in $(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$libraries"); do
        mkdir -p "$context/rootfs$(dirname "$library")"
        cp -L "$library" "$context/rootfs$library"
    done
else
    if command -v sccache >/dev/null 2>&1 && [ -z "${RUSTC_WRAPPER:-}" ]; then
        export RUSTC_WRAPPER=sccache
    fi
    # (cc-rs also routes RocksDB's C++ through sccache when it is the RUSTC_WRAPPER, and sccache
    # caches it across target dirs.)
    echo "building the static binary (target dir $target_dir)" >&2
    (
        cd "$root"
        RUSTFLAGS='-C target-feature=+crt-static' \
        CXXSTDLIB='static:-bundle=stdc++' \
        CARGO_TARGET_DIR="$target_dir" \
            cargo build --release --locked --target "$target" --bin wharf
    )
    binary="$target_dir/$target/release/wharf"

    # Refuse a dynamic binary: in a scratch image it would fail with a bare "no such file or
    # directory".
    description="$(file -b "$binary")"
    echo "$description" >&2
    case "$description" in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) echo "error: $binary is not statically linked" >&2; exit 1 ;;
    esac
    # ldd says "statically linked" for a static-pie and "not a dynamic executable" for a static
    # exec.
    libraries="$(ldd "$binary" 2>&1 || true)"
    echo "ldd: $libraries" >&2
    case "$libraries" in
        *"statically linked"* | *"not a dynamic executable"*) ;;
        *) echo "error: ldd found dynamic dependencies in $binary" >&2; exit 1 ;;
    esac
fi

# A minimal build context: the binary, the Dockerfile, and the data dir owned by the runtime user.
install -m 0755 "$binary" "$context/wharf"
strip "$context/wharf" 2>/dev/null || true
cp "$root/Dockerfile" "$context/Dockerfile"
chmod 0755 "$context/rootfs/data"
chmod 1777 "$context/rootfs/tmp"

docker build -t "$tag" "$context"
docker image ls "$tag"
