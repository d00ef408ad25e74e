#!/usr/bin/env bash
# The pull-through cache (issue 16): pulls of blobs that live in an upstream (CNCF Distribution
# 2.8 on loopback), directly from it, through `wharf serve` as a pull-through cache, and through
# Distribution's own proxy mode (`proxy.remoteurl`), the reference. Each cache pulls the same set
# twice: cold (every blob fetched from the upstream while it is served) and warm (from the cache).
#
#   bash benches/proxy_cache.sh               # 200 x 1 MiB (c=16) and 1 x 1 GiB (c=1), RUNS=3
#   RUNS=1 BIG=256MiB bash benches/proxy_cache.sh
#
# Prints one JSON line per (run, case, target, pass) with MB/s, p50/p99 and the cache's peak RSS
# during the pass (`--watch-pid`), then the medians. Environment: RUNS (3), BIG (1GiB), OUT (raw
# lines, default a temp file), WHARF_SERVER (another wharf binary to measure).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

RUNS=${RUNS:-3}
BIG=${BIG:-1GiB}
WORK=$(mktemp -d)
OUT=${OUT:-$WORK/results.jsonl}
PIDS=()
trap cleanup EXIT
command -v docker-registry >/dev/null || {
  echo "docker-registry (Debian's CNCF Distribution 2.8) is required: apt-get install docker-registry" >&2
  exit 1
}
build_wharf

# distribution NAME [REMOTE]: Distribution on its own dir (a pull-through cache of REMOTE when
# given); sets DIST_URL and DIST_PID.
distribution() {
  local dir="$WORK/$1"
  mkdir -p "$dir/data"
  local proxy=""
  [ -n "${2:-}" ] && proxy=$'proxy:\n  remoteurl: '"$2"
  cat >"$dir/config.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
log:
  level: info
  accesslog:
    disabled: true
$proxy
YAML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  DIST_PID=$!
  PIDS+=("$DIST_PID")
  # Bound to port 0: the address comes from its "listening on" log line.
  wait_for grep -q 'listening on' "$dir/log"
  DIST_URL="http://$(grep -o 'listening on [^" ]*' "$dir/log" | head -1 | awk '{print $3}')"
}

# wharf_cache UPSTREAM: wharf serve with UPSTREAM as proxy `up` under `hub`; sets WHARF_URL and
# WHARF_PID.
wharf_cache() {
  local dir="$WORK/wharf"
  mkdir -p "$dir"
  "$SERVER" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data "$dir/data" \
    --addr-file "$dir/addr.json" --log warn >"$dir/log" 2>&1 &
  WHARF_PID=$!
  PIDS+=("$WHARF_PID")
  wait_for test -s "$dir/addr.json"
  WHARF_URL="http://$(jq -r .http "$dir/addr.json")"
  "$WHARF" admin --meta "$(jq -r .grpc "$dir/addr.json")" proxy add --id up --url "$1" \
    --prefix hub >/dev/null
}

# measure RUN CASE TARGET ARGS...: one `wharf bench pull` (which pushes its blobs to the
# upstream first, untimed), one JSON line per pass.
measure() {
  local run=$1 case=$2 target=$3; shift 3
  "$WHARF" bench --quiet --json "$@" |
    jq -c --arg run "$run" --arg case "$case" --arg target "$target" '
      [., (.passes // [])[]] | to_entries[] |
      {run: ($run|tonumber), case: $case, target: $target, pass: (if $target == "direct" then "-" elif .key == 0 then "cold" else "warm" end),
       mbps: .value.mb_per_second, p50_ms: .value.latency_ms.p50, p99_ms: .value.latency_ms.p99,
       rss_peak_mib: .value.rss_peak_mib, errors: .value.errors}' | tee -a "$OUT"
}

for run in $(seq "$RUNS"); do
  for case in "200 1MiB 16" "1 $BIG 1"; do
    read -r count size concurrency <<<"$case"
    label="${count}x$size"
    common=(pull --count "$count" --size "$size" -c "$concurrency" --verify)
    distribution upstream
    upstream=$DIST_URL
    measure "$run" "$label" direct --url "$upstream" --watch-pid "$DIST_PID" "${common[@]}"
    wharf_cache "$upstream"
    measure "$run" "$label" wharf --url "$upstream" --watch-pid "$WHARF_PID" "${common[@]}" \
      --pull-url "$WHARF_URL" --pull-prefix hub --passes 2
    distribution dist-cache "$upstream"
    # Distribution's proxy mode serves the upstream's repositories under their own names.
    measure "$run" "$label" distribution --url "$upstream" --watch-pid "$DIST_PID" \
      "${common[@]}" --pull-url "$DIST_URL" --passes 2
    stop_target
  done
done

echo "==> medians over $RUNS run(s)"
jq -s -c 'group_by([.case, .target, .pass])[] |
  {case: .[0].case, target: .[0].target, pass: .[0].pass,
   mbps: ([.[].mbps] | sort | .[length/2|floor]),
   p99_ms: ([.[].p99_ms] | sort | .[length/2|floor]),
   rss_peak_mib: ([.[].rss_peak_mib] | sort | .[length/2|floor])}' "$OUT"
