#!/usr/bin/env bash
# Horizontal scale (see benches/README.md, "Scale"): starts `wharf dev cluster` in each SHAPE, runs
# one `wharf bench` process per gateway at once, and prints the aggregate throughput and every
# member's CPU time per 1,000 operations (utime + stime from /proc/<pid>/stat over the timed phase
# only: the bench processes do their set-up first, then start together on a shared file).
#
# CPU per operation per role is the law that holds on any machine: a role's ceiling is its cores
# divided by its CPU per operation, so a cluster's ceiling follows from these figures.
#
#   bash benches/scale.sh                                  # every shape and workload below
#   SHAPES="1/1/3/0" WORKLOADS=tag-get bash benches/scale.sh
#   WHARF_SERVER=/path/to/older/wharf bash benches/scale.sh   # measure another build
#
# SHAPES: space-separated GATEWAYS/BLOBS/VOTERS/READ_REPLICAS ("1/1/3/0 2/2/3/0 2/2/3/2"), or
# `serve`: one `wharf serve` process (every role in one; with BLOB_HTTP=1 its blob node serves
# redirected GETs too), measured the same way, for the scale law's comparison with one process.
# WORKLOADS: any of tag-get, digest-get, blob-get, manifest-put, blob-push (4 KiB blobs)
# ("tag-get blob-get manifest-put blob-push").
# REQUESTS (20000 manifest GETs per gateway, -c GET_CONCURRENCY=64), BLOBS (400 blobs of 1 MiB per
# gateway, -c BLOB_CONCURRENCY=16), PUTS (4000 manifest PUTs per gateway, -c 16), SMALL_PUSHES
# (2000 pushes of 4 KiB blobs per gateway, -c 16), OUT (results:
# JSON lines and logs; a temp dir by default), BLOB_HTTP (1: blob nodes serve redirected GETs, so
# blob GETs of 1 MiB go straight to them; 0: through the gateways).
set -euo pipefail
cd "$(dirname "$0")/.."

SHAPES=${SHAPES:-"1/1/3/0 2/2/3/0 2/2/3/2"}
WORKLOADS=${WORKLOADS:-"tag-get blob-get manifest-put blob-push"}
REQUESTS=${REQUESTS:-20000}
GET_CONCURRENCY=${GET_CONCURRENCY:-64}
BLOBS=${BLOBS:-400}
BLOB_CONCURRENCY=${BLOB_CONCURRENCY:-16}
PUTS=${PUTS:-4000}
SMALL_PUSHES=${SMALL_PUSHES:-2000}
BLOB_HTTP=${BLOB_HTTP:-1}
OUT=${OUT:-$(mktemp -d /tmp/wharf-scale-out.XXXXXX)}
WORK=$(mktemp -d /tmp/wharf-scale-work.XXXXXX)
mkdir -p "$OUT"

TICKS=$(getconf CLK_TCK)

PIDS=() # processes to stop
# shellcheck source=benches/lib.sh
source benches/lib.sh
build_wharf
trap cleanup EXIT

# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat; the command
# name in field 2 may hold spaces, so count from the closing parenthesis).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# NAME=PID=ROLE of every member, ROLE telling the meta leader, followers and read replicas apart.
members() {
  local dir=$1 meta status
  if [ -e "$dir/members" ]; then cat "$dir/members"; return; fi
  meta=$(jq -r '[.members[] | select(.role == "meta") | .grpc] | join(",")' "$dir/cluster.json")
  status=$("$WHARF" admin --meta "$meta" cluster status)
  jq -r --argjson status "$status" '
    ($status.leader_id) as $leader
    | ($status.meta_members | map({key: (.id | tostring), value: .role}) | from_entries) as $roles
    | .members[] | select(.pid)
    | "\(.name)=\(.pid)=" + (if .role != "meta" then .role
        elif .id == $leader then "meta-leader"
        elif $roles[.id | tostring] == "Learner" then "meta-replica"
        else "meta-follower" end)' "$dir/cluster.json"
}

# The bench arguments of a workload.
workload_args() {
  case $1 in
    tag-get) echo "manifest-get --by tag --requests $REQUESTS -c $GET_CONCURRENCY" ;;
    digest-get) echo "manifest-get --by digest --requests $REQUESTS -c $GET_CONCURRENCY" ;;
    blob-get) echo "pull --count $BLOBS --size 1MiB -c $BLOB_CONCURRENCY" ;;
    manifest-put) echo "manifest-put --requests $PUTS -c 16" ;;
    blob-push) echo "push --count $SMALL_PUSHES --size 4KiB -c 16" ;;
    *) echo "unknown workload $1" >&2; return 1 ;;
  esac
}

run_workload() {
  local shape=$1 workload=$2 dir=$3 gateway i=0 benches=() before=() after=() entry
  local gate="$WORK/gate-$workload"
  mkdir -p "$gate"
  mapfile -t gateways < <(jq -r '.gateways[]' "$dir/cluster.json")
  # shellcheck disable=SC2207
  local args=($(workload_args "$workload"))
  for gateway in "${gateways[@]}"; do
    "$WHARF" bench --url "$gateway" --quiet --json --ready-file "$gate/ready-$i" \
      --start-when "$gate/go" "${args[@]}" >"$gate/report-$i.json" 2>"$OUT/bench-$workload-$i.log" &
    benches+=($!)
    i=$((i + 1))
  done
  local deadline=$((SECONDS + 600))
  while (($(find "$gate" -name 'ready-*' | wc -l) < ${#benches[@]})); do
    for j in "${!benches[@]}"; do
      if ! kill -0 "${benches[j]}" 2>/dev/null && [ ! -e "$gate/ready-$j" ]; then
        echo "bench $j exited during its set-up; see $OUT/bench-$workload-$j.log" >&2
        return 1
      fi
    done
    if ((SECONDS > deadline)); then echo "bench set-up timed out" >&2; return 1; fi
    sleep 0.1
  done
  mapfile -t MEMBERS < <(members "$dir")
  for entry in "${MEMBERS[@]}"; do before+=("$(cpu_ticks "$(cut -d= -f2 <<<"$entry")")"); done
  local started ended
  started=$(date +%s.%N)
  touch "$gate/go"
  local failed=0
  for pid in "${benches[@]}"; do wait "$pid" || failed=1; done
  ended=$(date +%s.%N)
  for entry in "${MEMBERS[@]}"; do after+=("$(cpu_ticks "$(cut -d= -f2 <<<"$entry")")"); done
  if ((failed)); then echo "a bench process failed; see $OUT/bench-$workload-*.log" >&2; fi
  python3 - "$shape" "$workload" "$started" "$ended" "$TICKS" "$gate" \
    "${MEMBERS[*]}" "${before[*]}" "${after[*]}" <<'PY' | tee -a "$OUT/results.jsonl"
import glob, json, sys
shape, workload, started, ended, ticks, gate = sys.argv[1:7]
members, before, after = (a.split() for a in sys.argv[7:10])
reports = [json.load(open(path)) for path in sorted(glob.glob(f"{gate}/report-*.json"))]
seconds = float(ended) - float(started)
ok = sum(r["ok"] for r in reports)
errors = sum(r["errors"] for r in reports)
per_member, per_role = {}, {}
for member, b, a in zip(members, before, after):
    name, _, role = member.split("=")
    ms = (int(a) - int(b)) * 1000.0 / int(ticks)
    per_1000 = ms / ok * 1000 if ok else None
    per_member[name] = {"role": role, "cpu_ms": round(ms), "cpu_ms_per_1000_ops": round(per_1000, 2)}
    per_role.setdefault(role, []).append(per_1000)
print(json.dumps({
    "shape": shape, "workload": workload, "benches": len(reports), "ok": ok, "errors": errors,
    "seconds": round(seconds, 2), "ops_per_second": round(ok / seconds),
    "mb_per_second": round(sum(r["bytes"] for r in reports) / seconds / 1e6, 1),
    "p50_ms": max(r["latency_ms"]["p50"] for r in reports),
    # Mean over the members of a role, CPU milliseconds per 1,000 operations of the whole cluster.
    "cpu_ms_per_1000_ops_by_role": {role: round(sum(v) / len(v), 2) for role, v in per_role.items()},
    "members": per_member,
}))
PY
}

# `wharf serve` as one shape: a cluster.json with its one URL, and itself as the one member.
start_serve() {
  local dir=$1 extra=()
  mkdir -p "$dir"
  [[ "$BLOB_HTTP" == 1 ]] && extra=(--blob-http-listen 127.0.0.1:0)
  "$SERVER" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data "$dir/data" \
    --addr-file "$dir/addr.json" --log warn "${extra[@]}" >"$OUT/serve.log" 2>&1 &
  PIDS+=($!)
  echo "serve=$!=serve" >"$dir/members"
  wait_for test -s "$dir/addr.json"
  jq '{gateways: ["http://" + .http]}' "$dir/addr.json" >"$dir/cluster.json"
}

for shape in $SHAPES; do
  if [[ "$shape" == serve ]]; then
    echo "==> wharf serve" >&2
    dir="$WORK/serve"
    start_serve "$dir"
    for workload in $WORKLOADS; do
      echo "    $workload" >&2
      run_workload "$shape" "$workload" "$dir"
    done
    stop_target
    continue
  fi
  IFS=/ read -r gateways blobs voters replicas <<<"$shape"
  echo "==> $gateways gateways, $blobs blob nodes, $voters voters, $replicas read replicas" >&2
  dir="$WORK/cluster"
  extra=()
  # Older builds have no --read-replicas; pass it only when asked for.
  ((replicas > 0)) && extra=(--read-replicas "$replicas")
  [[ "$BLOB_HTTP" == 1 ]] && extra+=(--blob-http)
  WHARF_LOG=warn "$SERVER" dev cluster --meta "$voters" --blob "$blobs" --gateways "$gateways" \
    "${extra[@]}" --dir "$dir" >"$OUT/cluster-${shape//\//-}.log" 2>&1 &
  PIDS+=($!)
  wait_for jq -e '.state == "ready"' "$dir/cluster.json"
  for workload in $WORKLOADS; do
    echo "    $workload" >&2
    run_workload "$shape" "$workload" "$dir"
  done
  stop_target
done
echo "results (JSON lines, logs): $OUT" >&2
