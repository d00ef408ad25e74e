#!/usr/bin/env bash
# Memory and disk over a long write load, on `wharf serve` and on a 3-meta / 1-blob / 1-gateway
# dev cluster (see benches/README.md, "Memory under sustained writes"):
#
#   A. PUTS distinct manifest PUTs (`wharf bench manifest-put -c 16`) in rounds of ROUND; SETTLE
#      seconds after each round (an idle meta node flushes its memtables after 2-4 s of quiet and
#      returns freed heap every 5 s, so 10 s reads what it holds idle), every process's RSS and every
#      meta directory's size. Prints the RSS after 50k and at the end, its ratio, the slope after
#      the first 50k (MiB per 100k PUTs) and each process's peak (VmHWM, transient peaks included).
#   B. MINUTES of the mixed `wharf bench soak` load (new and moved tags, tag GETs, deletes, blob
#      pushes and pulls, garbage collection every second) on a fresh target, sampling every
#      process's RSS and the meta directories every SAMPLE seconds; prints the peak and the slope
#      after warm-up per process, and plots RSS and disk over time as SVG.
#
#   bash benches/soak.sh                               # both targets, 200k PUTs, 10 minutes mixed
#   TARGETS=serve PUTS=50000 MINUTES=2 bash benches/soak.sh
#   PHASES=B MINUTES=30 bash benches/soak.sh
#
# Environment: TARGETS ("serve cluster"), PHASES ("A B"), PUTS (200000), ROUND (25000), SETTLE (10), MINUTES
# (10), CONCURRENCY (8, phase B), SAMPLE (2), OUT (results: CSV, SVG, JSON lines, logs; a temp dir
# by default), WHARF_SERVER (another wharf binary to measure; the load comes from this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-"serve cluster"}
PHASES=${PHASES:-"A B"}
PUTS=${PUTS:-200000}
ROUND=${ROUND:-25000}
SETTLE=${SETTLE:-10}
MINUTES=${MINUTES:-10}
CONCURRENCY=${CONCURRENCY:-8}
SAMPLE=${SAMPLE:-2}
OUT=${OUT:-$(mktemp -d /tmp/wharf-soak-out.XXXXXX)}
WORK=$(mktemp -d /tmp/wharf-soak-work.XXXXXX)
mkdir -p "$OUT"

PIDS=()     # processes to stop
URL=""      # the target under test
WATCH=()    # NAME=PID of every process to sample
DIRS=()     # NAME=PATH of every meta directory to sample

# shellcheck source=benches/lib.sh
source benches/lib.sh
build_wharf
trap cleanup EXIT

start_serve() {
  local dir="$WORK/serve"
  mkdir -p "$dir"
  "$SERVER" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data "$dir/data" \
    --addr-file "$dir/addr.json" --log warn >"$OUT/serve-$PHASE.log" 2>&1 &
  PIDS+=($!)
  WATCH=("serve=$!")
  wait_for test -s "$dir/addr.json"
  wait_for test -d "$dir/data/meta"
  DIRS=("serve-meta=$dir/data/meta")
  URL="http://$(jq -r .http "$dir/addr.json")"
}

start_cluster() {
  local dir="$WORK/cluster"
  WHARF_LOG=warn "$SERVER" dev cluster --meta 3 --blob 1 --gateways 1 --dir "$dir" \
    >"$OUT/cluster-$PHASE.log" 2>&1 &
  PIDS+=($!)
  wait_for jq -e '.state == "ready"' "$dir/cluster.json"
  URL=$(jq -r '.gateways[0]' "$dir/cluster.json")
  mapfile -t WATCH < <(jq -r '.members[] | select(.pid) | "\(.name)=\(.pid)"' "$dir/cluster.json")
  mapfile -t DIRS < <(jq -r '.members[] | select(.role == "meta") | "\(.name)=\(.data)"' "$dir/cluster.json")
}

rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# The anonymous part of RSS (heap, arenas, stacks): RSS less the binary's and libraries' pages.
anon_mib() { awk '/^RssAnon:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
disk_mib() { du -sk "$1" | awk '{printf "%.1f", $1 / 1024}'; }

# A row of phase A's CSV: seconds, PUTs done, then RSS and its anonymous part per process and
# size per directory.
sample_row() {
  local row="$((SECONDS - START)),$1" entry
  for entry in "${WATCH[@]}"; do row+=",$(rss_mib "${entry#*=}")"; done
  for entry in "${WATCH[@]}"; do row+=",$(anon_mib "${entry#*=}")"; done
  for entry in "${DIRS[@]}"; do row+=",$(disk_mib "${entry#*=}")"; done
  echo "$row"
}

phase_a() {
  local target=$1 csv="$OUT/puts-$target.csv" header="seconds,operations" entry done=0
  for entry in "${WATCH[@]}"; do header+=",${entry%%=*}_rss_mib"; done
  for entry in "${WATCH[@]}"; do header+=",${entry%%=*}_anon_mib"; done
  for entry in "${DIRS[@]}"; do header+=",${entry%%=*}_disk_mib"; done
  echo "$header" >"$csv"
  START=$SECONDS
  sample_row 0 >>"$csv"
  while ((done < PUTS)); do
    local n=$((PUTS - done < ROUND ? PUTS - done : ROUND))
    "$WHARF" bench --url "$URL" --quiet --json manifest-put --requests "$n" -c 16 \
      | jq -c --arg t "$target" --argjson at "$((done + n))" \
        '{target:$t, case:"manifest-put-round", puts:$at, ops_per_second, errors}' >>"$OUT/results.jsonl"
    done=$((done + n))
    sleep "$SETTLE"
    sample_row "$done" | tee -a "$csv" | sed "s/^/    $target after PUTs: /" >&2
  done
  local peaks=""
  for entry in "${WATCH[@]}"; do peaks+="${entry%%=*}=$(hwm_mib "${entry#*=}") "; done
  python3 - "$csv" "$target" "$peaks" <<'PY' | tee -a "$OUT/results.jsonl"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
hwm = dict(pair.split("=") for pair in sys.argv[3].split())
ops = [float(r["operations"]) for r in rows]
for column in rows[0]:
    if not column.endswith("_rss_mib"):
        continue
    values = [float(r[column]) for r in rows]
    anon = [float(r[column[:-len("_rss_mib")] + "_anon_mib"]) for r in rows]
    at50 = next((v for o, v in zip(ops, values) if o >= 50000), None)
    anon50 = next((v for o, v in zip(ops, anon) if o >= 50000), None)
    settled = [(o, v) for o, v in zip(ops, values) if o >= 50000]
    slope = None
    if len(settled) >= 2:
        mx = sum(o for o, _ in settled) / len(settled)
        my = sum(v for _, v in settled) / len(settled)
        sxx = sum((o - mx) ** 2 for o, _ in settled)
        slope = sum((o - mx) * (v - my) for o, v in settled) / sxx * 100000 if sxx else None
    print(json.dumps({
        "target": sys.argv[2], "case": "manifest-put-rss", "process": column[:-len("_rss_mib")],
        "puts": ops[-1], "rss_at_50k_mib": at50, "rss_end_mib": values[-1],
        "end_over_50k": round(values[-1] / at50, 3) if at50 else None,
        "slope_mib_per_100k": round(slope, 2) if slope is not None else None,
        "sampled_max_mib": max(values),
        "anon_at_50k_mib": anon50, "anon_end_mib": anon[-1],
        "anon_end_over_50k": round(anon[-1] / anon50, 3) if anon50 else None,
        "peak_mib": float(hwm[column[:-len("_rss_mib")]]),
    }))
PY
  python3 benches/soak_plot.py "$csv" "$OUT/puts-$target.svg" --x operations \
    --title "$target, manifest PUTs:"
}

phase_b() {
  local target=$1 args=() entry
  for entry in "${WATCH[@]}"; do args+=(--watch "$entry"); done
  for entry in "${DIRS[@]}"; do args+=(--watch-dir "$entry"); done
  "$WHARF" bench --url "$URL" --quiet --json soak --duration "$((MINUTES * 60))" \
    -c "$CONCURRENCY" --sample-every "$SAMPLE" --samples "$OUT/soak-$target.csv" "${args[@]}" \
    | jq -c --arg t "$target" '{target:$t, case:"soak"} + .' | tee -a "$OUT/results.jsonl"
  python3 benches/soak_plot.py "$OUT/soak-$target.csv" "$OUT/soak-$target.svg" \
    --title "$target, mixed soak:"
}

for target in $TARGETS; do
  for PHASE in $PHASES; do
    echo "==> $target, phase $PHASE" >&2
    if [ "$PHASE" = B ]; then
      # Garbage collection on, so deletes and unreferenced pushes are collected as they go.
      export WHARF_GC_INTERVAL_MS=1000 WHARF_UPLOAD_GRACE_MS=5000
    else
      unset WHARF_GC_INTERVAL_MS WHARF_UPLOAD_GRACE_MS
    fi
    "start_$target"
    echo "    $URL; watching ${WATCH[*]}" >&2
    if [ "$PHASE" = A ]; then phase_a "$target"; else phase_b "$target"; fi
    stop_target
  done
done
echo "results (JSON lines, CSV, SVG): $OUT" >&2
