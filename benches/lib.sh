# Helpers shared by the benchmark scripts (sourced). They expect PIDS (an array of the processes
# the script started) and WORK (its scratch directory).

# Builds wharf (release, in the shared target dir, sccache for RocksDB's C++ when there is one)
# and sets WHARF (the tools: bench, admin) and SERVER (what is measured: WHARF_SERVER, default WHARF).
build_wharf() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/wharf-target}
  if command -v sccache >/dev/null; then export RUSTC_WRAPPER=${RUSTC_WRAPPER:-sccache}; fi
  echo "==> building wharf (release)" >&2
  cargo build --release --locked -q
  WHARF="$CARGO_TARGET_DIR/release/wharf"
  SERVER=${WHARF_SERVER:-$WHARF}
}

# Waits up to 120 s for a command to succeed.
wait_for() {
  local deadline=$((SECONDS + 120))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.2
  done
}

# Stops every process in PIDS (TERM, then waits for each) and forgets them.
stop_pids() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

# At exit: the processes stopped and WORK removed.
cleanup() {
  stop_pids
  rm -rf "$WORK"
}

# Between targets: the processes stopped and WORK emptied.
stop_target() {
  stop_pids
  rm -rf "${WORK:?}"/*
}
