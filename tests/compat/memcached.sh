#!/usr/bin/env bash
# compat test: memcached (four worker threads) on a free loopback port under a
# bounded load: memcached_client.py, eight client threads with a connection
# each, a deterministic mix of set/add/replace/cas/append/prepend/incr/decr/
# touch/delete/get/multi-get on values from 1 byte to 300 KiB, every reply
# checked against the client's own model; then the server's counters and a
# clean stop (SIGTERM). Plain and preloaded runs must print the same; in the
# zmm run the server and the client are both on zmm's heap, and the server
# must leave its zmm log. COMPAT_QUICK=1: 1500 operations per client,
# otherwise 20000.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require memcached memcached
ops=20000
[ "${COMPAT_QUICK:-0}" != 1 ] || ops=1500

mc_session() {
  local port server rc=0 as_root=()
  [ "$(id -u)" -ne 0 ] || as_root=(-u root)   # memcached wants -u as root
  port=$(compat_free_port)
  memcached -l 127.0.0.1 -p "$port" -U 0 -t 4 -c 64 -m 1024 -I 2m "${as_root[@]}" >server.log 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null; wait "$server"; tail -n 20 server.log >&2' EXIT
  compat_wait_port "$port"
  "$COMPAT_PY" "$COMPAT_DIR/memcached_client.py" 127.0.0.1 "$port" "$ops" 8
  kill -TERM "$server"
  wait "$server" || rc=$?
  trap - EXIT
  echo "server: stopped, status $rc"
  compat_scan_log server.log
  compat_logged "$server" "memcached server"
}

compat_compare memcached mc_session
compat_finish
