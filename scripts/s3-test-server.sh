#!/usr/bin/env bash
# An S3-compatible server on loopback for the tests and benchmarks: moto's server mode (from
# PyPI, installed by .ci/run), with the bucket the tests use.
#
#   eval "$(scripts/s3-test-server.sh start /tmp/wharf-s3)"   # prints the WHARF_TEST_S3_* exports
#   scripts/s3-test-server.sh stop /tmp/wharf-s3
#
# The server listens on a port the kernel picks (port 0) and reports in its log. Objects live in
# the server's memory (large ones spill to temporary files), so it is for tests only.
set -euo pipefail

action=${1:?usage: s3-test-server.sh start|stop DIR}
dir=${2:?usage: s3-test-server.sh start|stop DIR}
bucket=${WHARF_TEST_S3_BUCKET:-wharf-test}

case "$action" in
  start)
    mkdir -p "$dir"
    log="$dir/moto.log"
    : >"$log"
    # Its own session, so `stop` ends the server and anything it started.
    setsid python3 -m moto.server -H 127.0.0.1 -p 0 >"$log" 2>&1 </dev/null &
    echo $! >"$dir/moto.pid"
    endpoint=""
    for _ in $(seq 1 300); do
      endpoint=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n1 || true)
      [ -n "$endpoint" ] && break
      kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null || { cat "$log" >&2; exit 1; }
      sleep 0.1
    done
    if [ -z "$endpoint" ]; then
      echo "the S3 test server did not start; its log:" >&2
      cat "$log" >&2
      exit 1
    fi
    # moto accepts unsigned requests; a real server would need a signed CreateBucket.
    curl -fsS -X PUT "$endpoint/$bucket" >/dev/null
    echo "export WHARF_TEST_S3_ENDPOINT=$endpoint WHARF_TEST_S3_BUCKET=$bucket"
    ;;
  stop)
    if [ -f "$dir/moto.pid" ]; then
      pid=$(cat "$dir/moto.pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$dir/moto.pid"
    fi
    ;;
  *)
    echo "usage: s3-test-server.sh start|stop DIR" >&2
    exit 2
    ;;
esac
