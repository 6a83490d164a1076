#!/usr/bin/env bash
# compat test: lua5.4 running a table/string/pattern/coroutine workload
# (lua_workload.lua), plain and under the preload; stdout and exit status must
# match. COMPAT_QUICK=1 runs it at scale 1, otherwise at scale 3.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require lua5.4 lua5.4
scale=3
[ "${COMPAT_QUICK:-0}" != 1 ] || scale=1

compat_compare lua5.4 lua5.4 "$COMPAT_DIR/lua_workload.lua" "$scale"
compat_finish
