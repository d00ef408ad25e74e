#!/usr/bin/env bash
# Mutation testing (issue 15, part 6): cargo mutants on oci-model, hash-ring, auth and the
# meta-store state machine, one after the other, with each crate's own tests.
#
#   benches/mutants.sh                     every scope below
#   benches/mutants.sh SCOPE...            some of them: oci-model hash-ring auth meta-store
#   benches/mutants.sh --list SCOPE...     the mutants only, no build
#   MUTANTS_ITERATE=1 benches/mutants.sh SCOPE
#                                          only the mutants the last run missed (or timed out on),
#                                          after tests were added for them
#   MUTANTS_SHARD=0/10 benches/mutants.sh meta-store
#                                          one tenth of the scope's mutants (cargo mutants
#                                          --shard): a sample, for scopes too slow to run whole
#   MUTANTS_JOBS=2                         mutants built and tested at once (default 1)
#
# A scope's results land in $MUTANTS_OUT/SCOPE/mutants.out (default ~/.cache/wharf-mutants):
# caught.txt, missed.txt, timeout.txt, unviable.txt, outcomes.json. The script ends with one line
# per scope: caught / missed / timeout / unviable, the figures benches/README.md records.
#
# The meta-store scope is the state machine: what applies commands and answers reads from the
# applied state (apply, check, refs, retention, derived, state_machine), not the RocksDB plumbing
# (db, kv, log_store, snapshot files), whose mutants the Raft and chaos suites are the tests of.
#
# Cost on this 2-core machine: each mutant rebuilds its crate and its test binaries; meta-store's
# link RocksDB, so its 302 mutants take about two hours with two jobs (`apt-get install lld`
# first). Run it where nothing else is building.
set -euo pipefail
cd "$(dirname "$0")/.."

# No shared target dir: cargo mutants builds in each copy of the tree it makes (one per job).
# Cargo keys a workspace crate's artifacts by its path inside the workspace, so jobs sharing one
# target dir (or the main one, ~/.cache/wharf-target) would overwrite each other's mutated
# builds and test the wrong code. sccache keeps the copies' dependency builds cheap.
unset CARGO_TARGET_DIR
OUT=${MUTANTS_OUT:-$HOME/.cache/wharf-mutants}
# Each mutant relinks its crate's test binaries (meta-store's eight link RocksDB): without debug
# info, and with lld where Debian's `lld` is installed, a meta-store mutant builds in 12-20 s
# instead of about a minute. Neither changes what is tested.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}
if command -v ld.lld >/dev/null && [ -z "${RUSTFLAGS:-}" ]; then
  export RUSTFLAGS="-C link-arg=-fuse-ld=lld"
fi
if command -v sccache >/dev/null; then export RUSTC_WRAPPER=${RUSTC_WRAPPER:-sccache}; fi

list=()
if [ "${1:-}" = "--list" ]; then
  list=(--list)
  shift
fi
scopes=("$@")
if [ ${#scopes[@]} -eq 0 ]; then
  scopes=(oci-model hash-ring auth meta-store)
fi

args_of() {
  case "$1" in
    oci-model | hash-ring | auth) echo "--package $1" ;;
    meta-store)
      local files=""
      for file in apply check refs retention derived state_machine; do
        files+=" --file crates/meta-store/src/$file.rs"
      done
      echo "--package meta-store$files"
      ;;
    *)
      echo "unknown scope $1 (oci-model, hash-ring, auth, meta-store)" >&2
      exit 2
      ;;
  esac
}

summary=()
for scope in "${scopes[@]}"; do
  # shellcheck disable=SC2046
  set -- $(args_of "$scope")
  if [ ${#list[@]} -gt 0 ]; then
    cargo mutants "${list[@]}" "$@"
    continue
  fi
  iterate=()
  [ -n "${MUTANTS_ITERATE:-}" ] && iterate=(--iterate)
  [ -n "${MUTANTS_SHARD:-}" ] && iterate+=(--shard "$MUTANTS_SHARD")
  mkdir -p "$OUT/$scope"
  # Exit codes 2 (missed) and 3 (timeouts) are results, not failures of the run.
  status=0
  cargo mutants "$@" ${iterate[@]+"${iterate[@]}"} --test-tool nextest --no-shuffle \
    --jobs "${MUTANTS_JOBS:-1}" --output "$OUT/$scope" || status=$?
  if [ "$status" -ne 0 ] && [ "$status" -ne 2 ] && [ "$status" -ne 3 ]; then
    echo "cargo mutants failed on $scope (exit $status)" >&2
    exit "$status"
  fi
  dir=$OUT/$scope/mutants.out
  count() {
    if [ -f "$dir/$1.txt" ]; then grep -c . "$dir/$1.txt" || true; else echo 0; fi
  }
  summary+=("$scope: caught $(count caught) / missed $(count missed) / timeout $(count timeout) / unviable $(count unviable)")
done
printf '%s\n' "${summary[@]}"
