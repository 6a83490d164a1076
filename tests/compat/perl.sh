#!/usr/bin/env bash
# compat test: Debian's perl running a hash/string/regex workload
# (perl_workload.pl), plain and under the preload; stdout and exit status must
# match. COMPAT_QUICK=1 runs it at scale 1, otherwise at scale 4.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require perl perl
scale=4
[ "${COMPAT_QUICK:-0}" != 1 ] || scale=1
export PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0

compat_compare perl perl "$COMPAT_DIR/perl_workload.pl" "$scale"
compat_finish
