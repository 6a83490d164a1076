#!/usr/bin/env bash
# compat test: Debian's python3, plain and under the preload, running the
# two scripts of python.sh and CPython's own regression tests: every group of
# cpython_tests.txt plus test_subprocess test_signal test_os
# test_multiprocessing_fork (COMPAT_QUICK=1: a handful of them). Each
# regrtest run prints its verdict and its lists of tests (passed, skipped,
# failed): they must match between the plain and the preloaded run, and both
# must succeed. Every Python the tests start inherits the preload.
#
#   ZMM_LIB=libzmm.so python_regrtest.sh [TEST...]   (default: the selection)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require "$COMPAT_PY" python3
if ! "$COMPAT_PY" -c 'import test.libregrtest' 2>/dev/null; then
  echo "compat: $COMPAT_PY has no test suite: apt-get install libpython3.11-testsuite" >&2
  exit 1
fi
export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1

if [ $# -gt 0 ]; then
  tests=("$@")
elif [ "${COMPAT_QUICK:-0}" = 1 ]; then
  tests=(test_dict test_set test_re test_json test_struct test_os)
else
  # shellcheck disable=SC2207 # test names have no spaces
  tests=($(grep -v '^#' "$COMPAT_DIR/cpython_tests.txt" | cut -d' ' -f2-)
         test_subprocess test_signal test_os test_multiprocessing_fork)
fi

# regrtest: the suite, then its verdict and the lists of tests by outcome
# from the final summary (no timings); on failure, the end of its log.
regrtest() {
  local rc=0
  "$COMPAT_PY" -m test -u none -W "$@" >regrtest.log 2>&1 || rc=$?
  sed -n '/^== Tests result/,$p' regrtest.log | grep -v -e '^Total duration' -e '^$'
  if [ $rc -ne 0 ]; then
    echo "--- regrtest exited with status $rc; the end of its output:" >&2
    tail -n 80 regrtest.log >&2
  fi
  return $rc
}

compat_compare python-containers "$COMPAT_PY" "$COMPAT_DIR/py_containers.py"
compat_compare python-threads "$COMPAT_PY" "$COMPAT_DIR/py_threads.py"
compat_compare python-regrtest regrtest "${tests[@]}"
compat_finish
