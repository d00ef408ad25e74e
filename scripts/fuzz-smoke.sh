#!/usr/bin/env bash
# The fuzz targets' smoke (issue 15, part 2): builds every target in fuzz/ once, then runs each
# for SECONDS (default 5) on its seed corpus and the inputs of the crashes found so far
# (fuzz/regressions/), so the targets keep building and every past crash stays fixed. Fails
# when any target crashes, times out or runs out of memory; benches/fuzz.sh keeps and names
# the input.
#
#   scripts/fuzz-smoke.sh [SECONDS]
#
# The build lands in FUZZ_TARGET_DIR (default ~/.cache/wharf-fuzz-target), apart from the main
# build's, since the instrumentation flags differ. -seed=1 keeps a run's mutations the same
# from one machine to the next.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
bash benches/fuzz.sh build
export FUZZ_SKIP_BUILD=1
failed=()
for target in $(bash benches/fuzz.sh list); do
  bash benches/fuzz.sh "$target" "$seconds" -seed=1 || failed+=("$target")
done
if ((${#failed[@]})); then
  echo "fuzz smoke: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz smoke: $(bash benches/fuzz.sh list | wc -l) targets, ${seconds}s each, no crash"
