#!/usr/bin/env bash
# scripts/zmm refuses what zmm would not honour, before any program runs or
# any signal is sent:
#   1. `zmm run` with a malformed option value: exit 2, the value named;
#   2. `zmm request PID` to a process that would die of the signal (not on
#      zmm, or on zmm without ZMM_REQUEST=signal): exit 1, nothing sent, the
#      process alive; to no process at all: exit 1;
#   3. to a process that takes requests by signal: sent (its begin and end
#      make a report), ZMM_REQUEST_SIGNAL read as zmm reads it (usr1).
# usage: wrapper_test.sh LIBZMM PROGRAM ZMM_SCRIPT
set -uo pipefail
lib=$1 prog=$2 zmm=$3
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

expect_refusal() {  # expect_refusal STATUS PATTERN COMMAND...
  local want=$1 pattern=$2 out status
  shift 2
  out=$("$@" 2>&1); status=$?
  [ "$status" -eq "$want" ] || fail "$* exited with $status, not $want: $out"
  [[ "$out" == *"$pattern"* ]] || fail "$*: expected '$pattern' in: $out"
}
expect_refusal 2 "--request bogus: expected process, signal or api" "$zmm" run --request bogus -- /bin/true
expect_refusal 2 "--backtrace needs a value" "$zmm" run --backtrace
expect_refusal 2 "--memory-limit 12Q: expected bytes" "$zmm" run --memory-limit=12Q /bin/true
expect_refusal 2 "--limit-action abort: expected fatal or enomem" "$zmm" run --limit-action abort /bin/true
expect_refusal 2 "--leak-exitcode 256: expected an exit status" "$zmm" run --leak-exitcode 256 /bin/true
expect_refusal 2 "--leaks none: expected lost, all or 0" "$zmm" run --leaks=none /bin/true
expect_refusal 1 "no process" "$zmm" request 999999999 begin

sleep 60 & plain=$!; pids+=("$plain")
env ZMM_REQUEST=api LD_PRELOAD="$lib" sleep 60 & api=$!; pids+=("$api")
sleep 0.3
expect_refusal 1 "does not run on zmm" "$zmm" request "$plain" begin
expect_refusal 1 "does not take requests by signal" "$zmm" request "$api" end
sleep 0.2
kill -0 "$plain" 2>/dev/null || fail "a process without zmm died of the request signal"
kill -0 "$api" 2>/dev/null || fail "a process in api mode died of the request signal"

mkfifo "$dir/in"
env ZMM_REQUEST=signal ZMM_REQUEST_SIGNAL=usr1 ZMM_LEAKS=all ZMM_LOG="$dir/zmm.log" LD_PRELOAD="$lib" \
  "$prog" <"$dir/in" >"$dir/out" 2>"$dir/err" &
server=$!; pids+=("$server")
exec 3>"$dir/in"
for _ in $(seq 100); do grep -q "^ready" "$dir/out" 2>/dev/null && break; sleep 0.05; done
"$zmm" request "$server" begin || fail "begin was refused"
sleep 0.2
echo leak >&3
for _ in $(seq 100); do grep -q "done leak" "$dir/out" 2>/dev/null && break; sleep 0.05; done
"$zmm" request "$server" end || fail "end was refused"
for _ in $(seq 60); do grep -q "=== Total" "$dir/zmm.log" 2>/dev/null && break; sleep 0.05; done
grep -q "=== Total 1 memory leaks detected ===" "$dir/zmm.log" || fail "no report of the request's leak: $(cat "$dir/zmm.log" "$dir/err" 2>&1)"
echo quit >&3
exec 3>&-
wait "$server" || fail "the server exited with $?"
echo "ok"
