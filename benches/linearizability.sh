#!/usr/bin/env bash
# Linearizability of tags under faults, the long version of tests/linearizability.rs (see
# benches/README.md, "Linearizability of tags"). Runs both of its harnesses one after the other:
#
#   in-process  a 3-voter / 2-blob-node / 2-gateway InProcessCluster: per history, a partition of
#               a voter (the leader or a follower), a stop and restart of the leader, restarts of
#               a gateway and a blob node
#   processes   the same shape as `wharf dev cluster` processes: per history, SIGKILL of the meta
#               leader and its restart, SIGKILL and restart of a gateway, SIGKILL and restart of
#               the new leader
#
# Each history: CLIENTS clients over both gateways, until the faults are over and at least OPS
# operations got a definite answer; then lincheck's verdict. Prints one line per history and a
# summary per harness; exits non-zero if any history is not linearizable (or undecided).
#
#   bash benches/linearizability.sh
#   IN_PROCESS_HISTORIES=5 PROCESS_HISTORIES=0 bash benches/linearizability.sh
#
# Environment: IN_PROCESS_HISTORIES (30), PROCESS_HISTORIES (20), OPS (200), CLIENTS (6), TAGS (3),
# THINK_MS (30, each client's longest pause between requests), OUT (the log; a temp dir by
# default). A debug build, as CI runs the short version.
set -euo pipefail
cd "$(dirname "$0")/.."

IN_PROCESS_HISTORIES=${IN_PROCESS_HISTORIES:-30}
PROCESS_HISTORIES=${PROCESS_HISTORIES:-20}
OUT=${OUT:-$(mktemp -d /tmp/wharf-linearizability.XXXXXX)}
mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/wharf-target}
if command -v sccache >/dev/null; then export RUSTC_WRAPPER=${RUSTC_WRAPPER:-sccache}; fi
export LINCHECK_OPS=${OPS:-200} LINCHECK_CLIENTS=${CLIENTS:-6} LINCHECK_TAGS=${TAGS:-3}
export LINCHECK_THINK_MS=${THINK_MS:-30} LINCHECK_KEEP_GOING=1 RUST_LOG=${RUST_LOG:-error}

echo "==> building the test (debug)" >&2
# Built once, then run directly: both harnesses test the same build.
BIN=$(cargo test --locked --test linearizability --no-run 2>&1 | tee /dev/stderr \
  | sed -n 's/.*Executable tests\/linearizability.rs (\(.*\))$/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "no test executable found" >&2; exit 1; }

status=0
run() {
  local name=$1 histories=$2 filter=$3
  ((histories > 0)) || return 0
  echo "==> $name: $histories histories (log: $OUT/$name.log)" >&2
  local started=$SECONDS
  # The libtest binary, not nextest: no per-test time limit for the long run.
  LINCHECK_HISTORIES=$histories "$BIN" --exact "$filter" --nocapture --test-threads 1 \
    >"$OUT/$name.log" 2>&1 || status=1
  grep '^LINCHECK ' "$OUT/$name.log" | sed 's/^LINCHECK //' || true
  grep '^LINCHECK ' "$OUT/$name.log" | awk -v name="$name" -v seconds=$((SECONDS - started)) '
    {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); field[kv[1]] = kv[2] }
      histories++; ops += field["operations"]; indeterminate += field["indeterminate"]
      events += field["chaos_events"]; check += field["check_ms"]
      if (field["check_ms"] > slowest) slowest = field["check_ms"]
      if (field["operations"] < fewest || histories == 1) fewest = field["operations"]
      verdicts[field["verdict"]]++
    }
    END {
      printf "%s: %d histories in %d s, %d operations (fewest in one history: %d), %d chaos events, ", \
        name, histories, seconds, ops, fewest, events
      printf "%d indeterminate writes and deletes; checker %.1f ms in all, slowest history %.2f ms; verdicts:", \
        indeterminate, check, slowest
      for (v in verdicts) printf " %s %d", v, verdicts[v]
      printf "\n"
    }'
  if grep -q 'panicked' "$OUT/$name.log"; then
    echo "$name: FAILED, see $OUT/$name.log" >&2
    grep -A40 'panicked' "$OUT/$name.log" | head -80 >&2
  fi
}

run in-process "$IN_PROCESS_HISTORIES" tags_are_linearizable_through_partitions_stops_and_restarts
run processes "$PROCESS_HISTORIES" tags_are_linearizable_through_sigkill_of_the_leader_and_restarts
exit $status
