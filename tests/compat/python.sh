#!/usr/bin/env bash
# compat test: Debian's python3 running a dict/list/str-heavy script and an
# eight-thread queue.Queue script, plain and under the preload; stdout and
# exit status must match. ZMM_LIB names libzmm.so.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require "$COMPAT_PY" python3
export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1

compat_compare python-containers "$COMPAT_PY" "$COMPAT_DIR/py_containers.py"
compat_compare python-threads "$COMPAT_PY" "$COMPAT_DIR/py_threads.py"
compat_finish
