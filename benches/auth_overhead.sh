#!/usr/bin/env bash
# Manifest GET by tag (c=64), manifest PUT (c=16) and 64 MiB blob push, on wharf serve with
# auth off, and with auth on (Basic on every request, policy-checked user with pull,push).
set -euo pipefail
W="${WHARF_BIN:-target/release/wharf}"  # a release build: cargo build --release
run() { # mode label args...
  local mode=$1; shift; local dir; dir=$(mktemp -d)
  local extra=(); [ "$mode" = auth ] && extra=(--auth)
  $W serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data "$dir/d" --addr-file "$dir/a.json" --log warn "${extra[@]}" >"$dir/log" 2>&1 &
  local pid=$!
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do [ -s "$dir/a.json" ] && break; sleep 0.1; done
  local http grpc; http=$(jq -r .http "$dir/a.json"); grpc=$(jq -r .grpc "$dir/a.json")
  local user=()
  if [ "$mode" = auth ]; then
    echo 'bench-password' | $W admin --meta "$grpc" user add bench --password-stdin >/dev/null
    $W admin --meta "$grpc" policy add --subject bench --repos 'bench/**' --actions pull,push >/dev/null
    user=(--user bench:bench-password)
  fi
  for spec in "manifest-get --requests 30000 -c 64" "manifest-put --requests 3000 -c 16" "push --count 8 --size 64MiB -c 1"; do
    $W bench --url "http://$http" "${user[@]}" --quiet --json $spec | jq -c --arg m "$mode" --arg w "${spec%% *}" '{mode:$m, workload:$w, ops:.ops_per_second, mbps:.mb_per_second, p50_ms:.latency_ms.p50, p99_ms:.latency_ms.p99, errors:.errors}'
  done
  kill $pid; wait $pid 2>/dev/null || true; rm -rf "$dir"
}
for _ in $(seq "${RUNS:-3}"); do run off; run auth; done
