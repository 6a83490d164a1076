#!/usr/bin/env bash
# ZMM_REQUEST=signal on an unmodified long-running program, driven between
# requests by `scripts/zmm request PID begin|end`:
#   1. a request with a leak in the main thread and one in a thread that then
#      blocks in read(): one report, both leaks, within a second of the end;
#   2. a clean request: nothing reported;
#   3. allocations between requests: never reported.
# usage: signal_test.sh LIBZMM PROGRAM ZMM_SCRIPT
set -euo pipefail
lib=$1 prog=$2 zmm=$3
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkfifo "$dir/in"
env -u ZMM_REQUEST_SIGNAL ZMM_REQUEST=signal ZMM_LEAKS=all ZMM_LOG="$dir/zmm.log" LD_PRELOAD="$lib" \
  "$prog" <"$dir/in" >"$dir/out" 2>"$dir/err" &
pid=$!
exec 3>"$dir/in"
fail() { echo "FAIL: $*"; echo "--- out"; cat "$dir/out"; echo "--- err"; cat "$dir/err"; echo "--- log"; cat "$dir/zmm.log" 2>/dev/null; exit 1; }
wait_for() {  # wait_for FILE PATTERN SECONDS
  local i
  for ((i = 0; i < $3 * 20; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
say() { echo "$1" >&3; wait_for "$dir/out" "done $1" 5 || fail "no answer to $1"; }

wait_for "$dir/out" "^ready" 5 || fail "the program did not start"
say work  # outside any request: persistent
"$zmm" request "$pid" begin
sleep 0.2
say work
say leak
say block
sleep 0.2  # the thread has allocated and is blocked in read()
"$zmm" request "$pid" end
start=$(date +%s%N)
wait_for "$dir/zmm.log" "=== Total" 3 || fail "no report after the request ended"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$elapsed_ms" -lt 1000 ] || fail "the report took ${elapsed_ms} ms (more than a second)"
grep -q "=== Total 2 memory leaks detected ===" "$dir/zmm.log" || fail "expected exactly 2 leaks"
grep -q " in leak_in_handler " "$dir/zmm.log" || fail "the main thread's leak is not named"
grep -q " in leak_in_blocked_thread " "$dir/zmm.log" || fail "the blocked thread's leak is not named"
grep -q "'signal'" "$dir/zmm.log" || fail "the report does not name the signal request"

# A clean request: no new report.
lines=$(wc -l <"$dir/zmm.log")
"$zmm" request "$pid" begin
sleep 0.2
say work
"$zmm" request "$pid" end
sleep 1
[ "$(wc -l <"$dir/zmm.log")" -eq "$lines" ] || fail "a clean request was reported"
# Between requests: a leak is persistent, never reported.
say leak
echo quit >&3
exec 3>&-
wait "$pid" || fail "the program exited with $?"
[ "$(wc -l <"$dir/zmm.log")" -eq "$lines" ] || fail "a leak outside requests was reported"
[ ! -s "$dir/err" ] || fail "unexpected stderr"
echo "ok: report ${elapsed_ms} ms after the end"
