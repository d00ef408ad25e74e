#!/usr/bin/env bash
# Storage lifecycle figures on `wharf serve` (release build):
#  1. garbage-collection throughput: COUNT blobs pushed with no manifest (so all become garbage
#     after the upload grace), then /metrics sampled every 50 ms until the blob node has deleted
#     them all; blobs/s between the first and the last deletion seen;
#  2. what reference counting costs the write path: manifest PUT (c=16) and 256 KiB blob pushes
#     (c=16) on this build and, when WHARF_BEFORE points at an older binary, on that one too.
# RUNS rounds each; prints one JSON line per measurement.
set -euo pipefail
W="${WHARF_BIN:-target/release/wharf}"
COUNT="${COUNT:-5000}"

start() { # binary dir extra... -> sets http, pid
  local bin=$1 dir=$2; shift 2
  "$bin" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data "$dir/d" \
    --addr-file "$dir/a.json" --log warn "$@" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do [ -s "$dir/a.json" ] && break; sleep 0.05; done
  http=$(jq -r .http "$dir/a.json")
}

deleted() { curl -s "http://$http/metrics" | awk '/^wharf_gc_blobs_deleted_total/ {print $2}' | tail -1; }

gc_throughput() {
  local dir; dir=$(mktemp -d)
  start "$W" "$dir" --gc-interval-ms 250 --upload-grace-ms 1000
  "$W" bench --url "http://$http" --quiet --json push --count "$COUNT" --size 4KiB -c 16 >/dev/null
  local first="" last="" seen=0 deadline=$((SECONDS + 300))
  while [ "$seen" -lt "$COUNT" ] && [ $SECONDS -lt $deadline ]; do
    seen=$(deleted); seen=${seen:-0}; seen=${seen%.*}
    now=$(date +%s.%N)
    if [ "$seen" -gt 0 ] && [ -z "$first" ]; then first=$now; fi
    last=$now
    sleep 0.05
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
  python3 -c "import json; print(json.dumps({'case':'gc-throughput','blobs':$seen,'seconds':round($last-$first,3),'blobs_per_second':round($seen/max($last-$first,1e-3))}))"
}

write_path() { # label binary
  local label=$1 bin=$2 dir; dir=$(mktemp -d)
  start "$bin" "$dir"
  for spec in "manifest-put --requests 3000 -c 16" "push --count 2000 --size 256KiB -c 16"; do
    "$W" bench --url "http://$http" --quiet --json $spec | jq -c --arg b "$label" --arg w "${spec%% *}" \
      '{case:"write-path", build:$b, workload:$w, ops:.ops_per_second, p50_ms:.latency_ms.p50, p99_ms:.latency_ms.p99, errors:.errors}'
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}

for _ in $(seq "${RUNS:-3}"); do
  gc_throughput
  write_path this "$W"
  if [ -n "${WHARF_BEFORE:-}" ]; then write_path before "$WHARF_BEFORE"; fi
done
