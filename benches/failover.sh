#!/usr/bin/env bash
# Failover (see benches/README.md, "Failover"), on a 3-voter / 3-blob-node / 2-gateway dev cluster
# at replication factor 2:
#
#   meta   TRIALS times: SIGKILL the meta leader, then PUT manifests (through gateway 1, one at a
#          time) until one is acknowledged: the seconds from the kill to that 201. The member is
#          restarted between trials. Prints each trial and the median.
#   blob   TRIALS times: SIGKILL a blob node, then push distinct 4 KiB blobs (monolithic POST, one
#          at a time) for WINDOW seconds: how many were refused and when the last refusal came
#          (seconds after the kill; none means every push was acknowledged).
#   steady LOAD_SECONDS of `wharf bench soak` (writes, reads, deletes) on the healthy cluster: the
#          Raft term before and after, so the number of elections under load (the target is 0).
#
#   bash benches/failover.sh
#   TRIALS=3 CASES="meta" bash benches/failover.sh
#
# Environment: CASES ("steady meta blob"), TRIALS (5), WINDOW (5), LOAD_SECONDS (60), OUT (results
# as JSON lines, and logs; a temp dir by default), WHARF_SERVER (another wharf binary to measure).
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-"steady meta blob"}
TRIALS=${TRIALS:-5}
WINDOW=${WINDOW:-5}
LOAD_SECONDS=${LOAD_SECONDS:-60}
OUT=${OUT:-$(mktemp -d /tmp/wharf-failover-out.XXXXXX)}
WORK=$(mktemp -d /tmp/wharf-failover-work.XXXXXX)
mkdir -p "$OUT"

PIDS=()
# shellcheck source=benches/lib.sh
source benches/lib.sh
build_wharf
trap cleanup EXIT

DIR="$WORK/cluster"
WHARF_LOG=warn "$SERVER" dev cluster --meta 3 --blob 3 --gateways 2 --dir "$DIR" \
  >"$OUT/cluster.log" 2>&1 &
PIDS+=($!)
wait_for jq -e '.state == "ready"' "$DIR/cluster.json"
URL=$(jq -r '.gateways[0]' "$DIR/cluster.json")
META=$(jq -r '[.members[] | select(.role == "meta") | .grpc] | join(",")' "$DIR/cluster.json")
"$WHARF" admin --meta "$META" cluster policy --replicas 2 >/dev/null

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
status() { "$WHARF" admin --meta "$META" cluster status; }

# The empty config every manifest below uses ({}), pushed once.
EMPTY=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
curl -sf -o /dev/null -X POST --data-binary '{}' "$URL/v2/failover/blobs/uploads/?digest=$EMPTY"

SEQ=0
# PUTs one new manifest under a new tag; prints the HTTP status.
put_manifest() {
  SEQ=$((SEQ + 1))
  local body
  body=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2}],"annotations":{"seq":"%s"}}' "$EMPTY" "$EMPTY" "$SEQ")
  curl -s -o /dev/null -w '%{http_code}' --max-time 15 -X PUT \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$body" \
    "$URL/v2/failover/manifests/t$SEQ" || echo 000
}

# Pushes one new 4 KiB blob (monolithic POST); prints the HTTP status.
push_blob() {
  local file="$WORK/blob" digest
  head -c 4096 /dev/urandom >"$file"
  digest="sha256:$(sha256sum "$file" | cut -d' ' -f1)"
  curl -s -o /dev/null -w '%{http_code}' --max-time 15 -X POST --data-binary "@$file" \
    -H 'Content-Type: application/octet-stream' "$URL/v2/failover/blobs/uploads/?digest=$digest" \
    || echo 000
}

manifest_acknowledged() { [ "$(put_manifest)" = 201 ]; }
blob_acknowledged() { [ "$(push_blob)" = 201 ]; }
meta_member_caught_up() {
  status | jq -e --argjson id "$1" \
    '. as $s | ([$s.meta_members[] | select(.id == $id) | .matched_index // -1][0]) >= $s.commit_index'
}
blob_node_up() {
  [ "$(status | jq -r --argjson id "$1" '.map.members[] | select(.node.id == $id) | .state')" = Up ]
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

case_steady() {
  local before after
  before=$(status | jq .term)
  "$WHARF" bench --url "$URL" --quiet --json soak --duration "$LOAD_SECONDS" -c 16 \
    >"$OUT/steady-soak.json"
  after=$(status | jq .term)
  jq -c --argjson before "$before" --argjson after "$after" \
    '{case: "steady", seconds: .seconds, ok, errors, ops_per_second, term_before: $before,
      term_after: $after, elections: ($after - $before)}' "$OUT/steady-soak.json" \
    | tee -a "$OUT/results.jsonl"
}

case_meta() {
  local trial leader name started code seconds times=()
  for trial in $(seq 1 "$TRIALS"); do
    wait_for manifest_acknowledged
    leader=$(status | jq .leader_id)
    name=$(jq -r --argjson id "$leader" '.members[] | select(.role == "meta" and .id == $id) | .name' \
      "$DIR/cluster.json")
    started=$(now)
    "$WHARF" dev kill --dir "$DIR" --member "$name" >/dev/null
    until code=$(put_manifest) && [ "$code" = 201 ]; do :; done
    seconds=$(since "$started")
    times+=("$seconds")
    jq -nc --argjson trial "$trial" --arg member "$name" --argjson s "$seconds" \
      '{case: "meta-leader-kill", trial: $trial, killed: $member, first_ack_after_s: $s}' \
      | tee -a "$OUT/results.jsonl"
    "$WHARF" dev restart --dir "$DIR" --member "$name" >/dev/null
    # The next trial kills the new leader, so the restarted member must be back in the quorum:
    # wait until the leader has it holding the log up to the commit index.
    wait_for meta_member_caught_up "$leader"
  done
  printf '%s\n' "${times[@]}" | median | jq -c '{case: "meta-leader-kill", median_s: .}' \
    | tee -a "$OUT/results.jsonl"
}

case_blob() {
  local trial victim started code elapsed refused last pushed
  for trial in $(seq 1 "$TRIALS"); do
    victim="blob-$(((trial - 1) % 3 + 1))"
    wait_for blob_acknowledged
    started=$(now)
    "$WHARF" dev kill --dir "$DIR" --member "$victim" >/dev/null
    refused=0 last=null pushed=0
    while elapsed=$(since "$started") && awk -v e="$elapsed" -v w="$WINDOW" 'BEGIN {exit !(e < w)}'; do
      code=$(push_blob)
      pushed=$((pushed + 1))
      if [ "$code" != 201 ]; then refused=$((refused + 1)) last=$(since "$started"); fi
    done
    jq -nc --argjson trial "$trial" --arg member "$victim" --argjson pushed "$pushed" \
      --argjson refused "$refused" --argjson last "$last" \
      '{case: "blob-node-kill", trial: $trial, killed: $member, pushes: $pushed,
        refused: $refused, last_refusal_after_s: $last}' | tee -a "$OUT/results.jsonl"
    "$WHARF" dev restart --dir "$DIR" --member "$victim" >/dev/null
    wait_for blob_node_up "${victim#blob-}"
  done
}

for case in $CASES; do
  echo "==> $case" >&2
  "case_$case"
done
echo "results (JSON lines, logs): $OUT" >&2
