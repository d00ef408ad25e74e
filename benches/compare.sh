#!/usr/bin/env bash
# Side-by-side: CNCF Distribution 2.8 (Debian's docker-registry), `wharf serve`, and a local
# 3-meta / 3-blob / 2-gateway Wharf cluster (replication factor 2), each measured with the same
# `wharf bench` workloads in one run, RUNS times; prints the medians and their ratio to
# Distribution. Usage (see benches/README.md):
#
#   bash benches/compare.sh                 # the full comparison, 3 runs
#   RUNS=1 BIG=256MiB bash benches/compare.sh   # a quicker look
#
# Environment: RUNS (3), BIG (1GiB: the single-blob push/pull size), TARGETS ("distribution serve
# cluster"), OUT (a directory for the raw JSON lines; a temp dir by default), WORK (where the
# registries keep their data; a temp dir under /tmp by default), WHARF_SERVER (another wharf binary
# to measure as serve and cluster, e.g. an older build for before/after figures; the load always
# comes from this checkout's `wharf bench`), IDLE (10: seconds without load before the idle RSS is
# read, after a target's last run), CASES (the cases to run, all by default: push-big-monolithic
# push-big-chunked pull-big pull-200x1MiB push-2000x4KiB manifest-get-tag manifest-put),
# CLUSTER_REDIRECT (1: the cluster's blob nodes serve redirected GETs, so pulls of 1 MiB and more
# go straight to them; 0: every byte through a gateway), CLUSTER_BLOBS (3), CLUSTER_GATEWAYS (2)
# and CLUSTER_REPLICAS (2): the cluster's shape (always 3 meta voters; the load goes to the
# first gateway).
#
# Object storage (issue 14): the targets `distribution_s3` and `serve_s3` keep their blobs in a
# bucket of one S3-compatible server on loopback (moto, scripts/s3-test-server.sh), started when
# such a target is asked for; both registries then pay the same server's costs:
#
#   TARGETS="distribution distribution_s3 serve serve_s3" \
#     CASES="push-big-monolithic pull-big push-200x1MiB pull-200x1MiB" bash benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
CLUSTER_REDIRECT=${CLUSTER_REDIRECT:-1}
CLUSTER_BLOBS=${CLUSTER_BLOBS:-3}
CLUSTER_GATEWAYS=${CLUSTER_GATEWAYS:-2}
CLUSTER_REPLICAS=${CLUSTER_REPLICAS:-2}
BIG=${BIG:-1GiB}
TARGETS=${TARGETS:-"distribution serve cluster"}
CASES=${CASES:-"push-big-monolithic push-big-chunked pull-big pull-200x1MiB push-2000x4KiB manifest-get-tag manifest-put"}
OUT=${OUT:-$(mktemp -d /tmp/wharf-compare-out.XXXXXX)}
WORK=${WORK:-$(mktemp -d /tmp/wharf-compare-work.XXXXXX)}
mkdir -p "$OUT" "$WORK"

command -v docker-registry >/dev/null || {
  echo "docker-registry (Debian's CNCF Distribution 2.8) is not installed: apt-get install docker-registry" >&2
  exit 1
}

PIDS=()        # processes to stop at exit
S3_DIR=""      # the S3 server's directory, once started
URL=""         # the target under test
WATCH=""       # its pids, for RSS sampling

# shellcheck source=benches/lib.sh
source benches/lib.sh
build_wharf
trap 'cleanup; [[ -z "$S3_DIR" ]] || { bash scripts/s3-test-server.sh stop "$S3_DIR"; rm -rf "$S3_DIR"; }' EXIT

# Starts the S3 server once, and creates bucket $1 on it.
s3_bucket() {
  if [[ -z "$S3_DIR" ]]; then
    S3_DIR=$(mktemp -d /tmp/wharf-compare-s3.XXXXXX)
    eval "$(bash scripts/s3-test-server.sh start "$S3_DIR")"
  fi
  curl -fsS -X PUT "$WHARF_TEST_S3_ENDPOINT/$1" >/dev/null
}

# start_distribution [STORAGE]: Distribution on local files, or on the storage driver whose YAML
# (indented under `storage:`) is given.
start_distribution() {
  local dir="$WORK/distribution"
  mkdir -p "$dir/data"
  local storage=${1:-"  filesystem:
    rootdirectory: $dir/data"}
  cat >"$dir/config.yml" <<YAML
version: 0.1
storage:
$storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
log:
  level: info
  accesslog:
    disabled: true
YAML
  # Bound to port 0: the address comes from its "listening on" log line. Without AWS_CA_BUNDLE:
  # the S3 driver's SDK cannot load one into its HTTP client and panics (plain http here anyway).
  env -u AWS_CA_BUNDLE docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  PIDS+=($!)
  WATCH=$!
  wait_for grep -q 'listening on' "$dir/log"
  URL="http://$(grep -o 'listening on [^" ]*' "$dir/log" | head -1 | awk '{print $3}')"
}

start_distribution_s3() {
  local bucket="distribution-$RANDOM$RANDOM"
  s3_bucket "$bucket"
  start_distribution "  s3:
    accesskey: wharf-test
    secretkey: wharf-test
    region: us-east-1
    regionendpoint: $WHARF_TEST_S3_ENDPOINT
    bucket: $bucket
    secure: false
    v4auth: true"
}

start_serve_s3() {
  local bucket="serve-$RANDOM$RANDOM"
  s3_bucket "$bucket"
  start_serve --s3-bucket "$bucket" --s3-prefix blob-1 --s3-endpoint "$WHARF_TEST_S3_ENDPOINT" \
    --s3-access-key-id wharf-test --s3-secret-access-key wharf-test
}

# start_serve [ARGS...]: `wharf serve` with ARGS added.
start_serve() {
  local dir="$WORK/serve"
  mkdir -p "$dir"
  "$SERVER" serve --listen 127.0.0.1:0 --data "$dir/data" --addr-file "$dir/addr.json" \
    --log warn "$@" >"$dir/log" 2>&1 &
  PIDS+=($!)
  WATCH=$!
  wait_for test -s "$dir/addr.json"
  URL="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$dir/addr.json")"
}

start_cluster() {
  local dir="$WORK/cluster"
  local blob_http=()
  [[ "$CLUSTER_REDIRECT" == 1 ]] && blob_http=(--blob-http)
  WHARF_LOG=warn "$SERVER" dev cluster --meta 3 --blob "$CLUSTER_BLOBS" --gateways "$CLUSTER_GATEWAYS" \
    "${blob_http[@]}" --dir "$dir" >"$WORK/cluster.log" 2>&1 &
  PIDS+=($!)
  wait_for python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["state"] != "ready")' "$dir/cluster.json"
  read -r URL META WATCH < <(python3 - "$dir/cluster.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
meta = ",".join(m["grpc"] for m in c["members"] if m["role"] == "meta")
pids = ",".join(str(m["pid"]) for m in c["members"] if m["pid"])
print(c["gateways"][0], meta, pids)
PY
)
  "$SERVER" admin --meta "$META" cluster policy --replicas "$CLUSTER_REPLICAS" >/dev/null
}

# bench TARGET CASE ARGS...: one run of one workload, appended to $OUT/results.jsonl.
bench() {
  local target=$1 case=$2
  shift 2
  local line
  [[ " $CASES " == *" $case "* ]] || return 0
  # Start every workload with no dirty pages: Distribution never fsyncs, so without this the
  # kernel writes back its gigabytes while the next workload (or the next target) is measured.
  sync
  line=$("$WHARF" bench --url "$URL" --json --quiet --watch-pid "$WATCH" "$@")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["target"]=sys.argv[2]; r["case"]=sys.argv[3]; print(json.dumps(r))' \
    "$line" "$target" "$case" >>"$OUT/results.jsonl"
  echo "    $case: $(python3 benches/report.py --line "$line")" >&2
}

# memory TARGET: the target's peak RSS over the whole run (VmHWM, summed over its processes) and
# its RSS after IDLE seconds without load, appended to $OUT/results.jsonl.
memory() {
  sleep "${IDLE:-10}"
  local peak=0 idle=0 pid
  for pid in ${WATCH//,/ }; do
    peak=$((peak + $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")))
    idle=$((idle + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  python3 -c 'import json,sys; print(json.dumps({"target": sys.argv[1], "case": "memory", "errors": 0, "rss_peak_mib": int(sys.argv[2]) / 1024, "rss_idle_mib": int(sys.argv[3]) / 1024}))' \
    "$1" "$peak" "$idle" >>"$OUT/results.jsonl"
  echo "    memory: peak $((peak / 1024)) MiB, idle $((idle / 1024)) MiB" >&2
}

for target in $TARGETS; do
  echo "==> $target" >&2
  "start_$target"
  echo "    $URL" >&2
  for run in $(seq 1 "$RUNS"); do
    echo "  run $run" >&2
    bench "$target" push-big-monolithic push --count 1 --size "$BIG" -c 1
    bench "$target" push-big-chunked push --count 1 --size "$BIG" -c 1 --chunk 16MiB
    bench "$target" pull-big pull --count 1 --size "$BIG" -c 1
    bench "$target" push-200x1MiB push --count 200 --size 1MiB -c 16
    bench "$target" pull-200x1MiB pull --count 200 --size 1MiB -c 16
    bench "$target" push-2000x4KiB push --count 2000 --size 4KiB -c 16
    bench "$target" manifest-get-tag manifest-get --requests 20000 -c 64
    bench "$target" manifest-put manifest-put --requests 2000 -c 16
  done
  memory "$target"
  stop_target
done

python3 benches/report.py "$OUT/results.jsonl"
echo "raw results: $OUT/results.jsonl" >&2
