#!/usr/bin/env bash
# compat test: bash running a string and array workload (bash_workload.sh),
# plain and under the preload; stdout and exit status must match.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_compare bash bash "$COMPAT_DIR/bash_workload.sh"
compat_finish
