#!/usr/bin/env bash
# Runs one misuse program under the preload and checks what happened:
#   run.sh LIB PROGRAM abort "MESSAGE WITH %p"   killed by SIGABRT, and stderr has
#                                                exactly that line (%p: the address
#                                                the program printed first)
#   run.sh LIB PROGRAM ok "EXPECTED STDERR LINE"  exit 0, and stderr has that line
#                                                exactly once ("-" for an empty
#                                                stderr; a final * matches any rest)
set -uo pipefail
lib=$1 prog=$2 want=$3 message=$4
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
LD_PRELOAD=$lib "$prog" >"$out" 2>"$err"
status=$?
addr=$(head -n1 "$out")
expect=${message//%p/$addr}
fail() { echo "FAIL $(basename "$prog"): $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }
case $want in
  abort)
    [ $status -eq 134 ] || fail "exit status $status, expected 134 (SIGABRT)"
    grep -qxF -- "$expect" "$err" || fail "stderr lacks the line: $expect"
    [ "$(grep -c '^zmm:' "$err")" -eq 1 ] || fail "more than one zmm line"
    ;;
  ok)
    [ $status -eq 0 ] || fail "exit status $status, expected 0"
    if [ "$expect" = "-" ]; then
      [ ! -s "$err" ] || fail "unexpected stderr"
    else
      n=0
      while IFS= read -r line; do
        if [[ "$expect" == *"*" ]]; then [[ "$line" == "${expect%\*}"* ]] && n=$((n + 1))
        else [ "$line" = "$expect" ] && n=$((n + 1)); fi
      done <"$err"
      [ $n -eq 1 ] || fail "stderr has the line $n times, expected once: $expect"
    fi
    ;;
esac
echo "ok $(basename "$prog")"
