#!/usr/bin/env bash
# compat test: part of CPython's own regression suite (Debian's
# libpython3.11-testsuite) under the preload.
#
#   ZMM_LIB=libzmm.so cpython_suite.sh NAME test_x test_y ...
#
# Runs `python3 -m test -u none -W test_x test_y ...` sequentially with
# LD_PRELOAD (every Python the tests start inherits it); passes when the exit
# status is 0 and regrtest prints "Tests result: SUCCESS". On failure, the
# failed tests are run again without the preload, to tell a zmm problem from
# a test that fails on this machine anyway.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

if [ $# -lt 2 ]; then
  echo "usage: ZMM_LIB=libzmm.so $0 NAME TEST..." >&2
  exit 2
fi
name=$1
shift

if ! "$COMPAT_PY" -c 'import test.libregrtest' 2>/dev/null; then
  echo "compat: $COMPAT_PY has no test suite: apt-get install libpython3.11-testsuite" >&2
  exit 1
fi

compat_require "$COMPAT_PY" python3
export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
compat_under_zmm "$name" "$COMPAT_PY" -m test -u none -W "$@"

out=$compat_tmp/$name.zmm/stdout
if ! grep -qx 'Tests result: SUCCESS' "$out"; then
  compat_fail "$name: no 'Tests result: SUCCESS' line under zmm:"
  grep -E '^(Tests result|== Tests result|[0-9]+ tests? (OK|failed|altered|skipped))' "$out" >&2 || true
  failed=$(sed -n '/tests\{0,1\} failed:$/,/^$/p; /altered the execution environment:$/,/^$/p' "$out" \
             | grep -o 'test_[A-Za-z0-9_]*' | sort -u | tr '\n' ' ' || true)
  if [ -n "$failed" ]; then
    echo "compat: running the failed tests again, without the preload: $failed" >&2
    # shellcheck disable=SC2086 # split the list of test names
    if (cd "$TMPDIR" && "$COMPAT_PY" -m test -u none $failed) >"$compat_tmp/rerun.out" 2>&1; then
      echo "compat: they pass without the preload: a zmm problem" >&2
    else
      echo "compat: they fail without the preload too: not zmm's doing" >&2
      tail -n 5 "$compat_tmp/rerun.out" >&2
    fi
  fi
fi
compat_finish
