#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read client bytes (fuzz/, issue 15 part 2).
#
#   benches/fuzz.sh list                      the targets
#   benches/fuzz.sh build [TARGET...]         build them (all by default)
#   benches/fuzz.sh [--merge] TARGET SECONDS [LIBFUZZER_FLAG...]
#                                             build TARGET and fuzz it for SECONDS
#
# A run fuzzes a copy of fuzz/corpus/TARGET (plus fuzz/regressions/TARGET, the inputs of every
# crash found so far) in a work directory, so new inputs stay out of the repository unless
# --merge asks for them (merged into fuzz/corpus/TARGET, minimised by libFuzzer's -merge=1).
# It ends with one summary line of libFuzzer's final figures; a crash, a timeout or an
# out-of-memory keeps the input in the work directory's artifacts/, prints its path and exits
# non-zero.
#
# Why libFuzzer through libfuzzer-sys, built by plain cargo: it runs on the stable toolchain
# (rustc's -Cpasses=sancov-module does the instrumentation, no nightly -Zsanitizer needed), it
# needs no tool beyond cargo and the C++ compiler that builds libFuzzer itself (no cargo-fuzz
# or cargo-afl to install), and libFuzzer brings what a CI smoke and long runs need:
# -max_total_time, -runs, corpus directories, -merge and minimised crash files.
#
# Environment: FUZZ_TARGET_DIR (build dir, default ~/.cache/wharf-fuzz-target: the flags differ
# from the main build's, so it never shares ~/.cache/wharf-target), FUZZ_WORK (work dir, default
# $FUZZ_TARGET_DIR/work/TARGET, emptied at the start of each run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/fuzz

export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/wharf-fuzz-target}
if command -v sccache >/dev/null && [ -z "${RUSTC_WRAPPER:-}" ]; then
  export RUSTC_WRAPPER=sccache
fi
HOST=$(rustc -vV | sed -n 's/^host: //p')
# The instrumentation cargo-fuzz uses on stable: 8-bit edge counters, the PC table libFuzzer
# reports `cov:` from, and compare tracing so it can solve magic strings and numbers. Passing
# --target keeps these flags off build scripts and proc macros, which run on the host unlinked
# from libFuzzer. debug-assertions and overflow-checks are on in fuzz/Cargo.toml's profile.
FUZZ_RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cforce-frame-pointers=yes"

targets() {
  sed -n 's/^name = "\(.*\)"$/\1/p' "$FUZZ/Cargo.toml" | grep -vx 'wharf-fuzz'
}

binary() {
  echo "$CARGO_TARGET_DIR/$HOST/release/$1"
}

build() {
  local bins=() locked=--locked
  for target in "$@"; do bins+=(--bin "$target"); done
  # fuzz/Cargo.lock goes stale when a workspace crate the targets use gains a dependency. Then
  # it is started again from the root lock, so the targets build the versions the workspace
  # does, and only what fuzz/ adds (libFuzzer) is resolved anew; commit the result.
  if ! cargo metadata --manifest-path "$FUZZ/Cargo.toml" --format-version 1 --locked \
    >/dev/null 2>&1; then
    echo "warning: fuzz/Cargo.lock is out of date; renewing it from Cargo.lock (commit it)" >&2
    cp "$ROOT/Cargo.lock" "$FUZZ/Cargo.lock"
    locked=
  fi
  echo "==> building fuzz targets: ${*:-all}" >&2
  RUSTFLAGS="$FUZZ_RUSTFLAGS" cargo build --manifest-path "$FUZZ/Cargo.toml" --release \
    $locked --target "$HOST" ${bins[@]+"${bins[@]}"} -q
}

# Inputs a target is allowed to grow to: manifests and proto messages get room for an index
# with many children; the rest are header- and path-sized.
max_len() {
  case $1 in
    manifest | proto) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

run() {
  local merge=$1 target=$2 seconds=$3
  shift 3
  targets | grep -qx "$target" || { echo "unknown target $target (benches/fuzz.sh list)" >&2; exit 2; }
  # FUZZ_SKIP_BUILD: the caller has just built every target (scripts/fuzz-smoke.sh).
  [ -n "${FUZZ_SKIP_BUILD:-}" ] || build "$target"
  local work=${FUZZ_WORK:-$CARGO_TARGET_DIR/work/$target}
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  local seeds=0
  if [ -d "$FUZZ/corpus/$target" ]; then
    cp -R "$FUZZ/corpus/$target/." "$work/corpus/"
    seeds=$(find "$FUZZ/corpus/$target" -type f | wc -l)
  fi
  local dirs=("$work/corpus")
  [ -d "$FUZZ/regressions/$target" ] && dirs+=("$FUZZ/regressions/$target")
  echo "==> fuzzing $target for ${seconds}s ($seeds seeds; log $work/log)" >&2
  local status=0 started=$SECONDS
  "$(binary "$target")" -max_total_time="$seconds" -max_len="$(max_len "$target")" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$@" "${dirs[@]}" >"$work/log" 2>&1 || status=$?
  summarise "$target" "$((SECONDS - started))" "$seeds" "$work" "$status"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$work/log" >&2
    echo "fuzz $target: FAILED (exit $status); inputs kept in $work/artifacts:" >&2
    ls -1 "$work/artifacts" >&2
    exit 1
  fi
  if [ "$merge" = 1 ]; then
    mkdir -p "$FUZZ/corpus/$target"
    "$(binary "$target")" -merge=1 -max_len="$(max_len "$target")" \
      "$FUZZ/corpus/$target" "$work/corpus" >>"$work/log" 2>&1
    echo "==> merged: fuzz/corpus/$target holds $(find "$FUZZ/corpus/$target" -type f | wc -l) inputs" >&2
  fi
}

# One line of libFuzzer's final figures: executions, rate, coverage (cov: edges, ft: features),
# corpus size and crashes.
summarise() {
  local target=$1 seconds=$2 seeds=$3 work=$4 status=$5 log=$4/log
  local execs rate last cov ft corpus crashes inited seed_cov seed_ft
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(sed -n 's/.* corp: \([0-9]*\)\/\([0-9a-zA-Z]*\).*/\1 (\2)/p' <<<"$last")
  inited=$(grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | head -n 1 || true)
  seed_cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$inited")
  seed_ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$inited")
  crashes=$(find "$work/artifacts" -type f | wc -l)
  echo "fuzz $target: ${seconds}s, ${execs:-?} execs (${rate:-?}/s), cov ${cov:-?} (seeds ${seed_cov:-?}), ft ${ft:-?} (seeds ${seed_ft:-?}), corpus ${corpus:-?} from $seeds seeds, crashes $crashes, exit $status"
}

case ${1:-} in
  list) targets ;;
  build)
    shift
    build "$@"
    ;;
  --merge)
    shift
    [ $# -ge 2 ] || { echo "usage: benches/fuzz.sh [--merge] TARGET SECONDS [LIBFUZZER_FLAG...]" >&2; exit 2; }
    run 1 "$@"
    ;;
  '' | -h | --help)
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    [ $# -ge 2 ] || { echo "usage: benches/fuzz.sh [--merge] TARGET SECONDS [LIBFUZZER_FLAG...]" >&2; exit 2; }
    run 0 "$@"
    ;;
esac
