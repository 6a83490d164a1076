#!/usr/bin/env bash
# compat test: cmake + make + g++ building zmm itself, plain and with the
# preload set for the whole build (cmake, make, g++, cc1plus, as, ld, and
# then the unit tests all run on zmm's heap). Both builds start from one
# snapshot of the source tree, each in a fresh build directory (Unix
# Makefiles generator, RelWithDebInfo). Compared: both builds succeed, the
# .text of libzmm.so (and of unit_tests) is byte-identical, the compiler made
# the same code whichever malloc it ran on, and the unit tests pass.
# COMPAT_QUICK=1 builds libzmm.so only, without the unit tests.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require cmake cmake
compat_require make make
compat_require g++ g++
compat_require objcopy binutils

root=$(cd "$COMPAT_DIR/../.." && pwd)
src=$compat_tmp/src
mkdir -p "$src"
# The snapshot: tracked and untracked files (not ignored ones, not build
# trees) of a git checkout; otherwise the tree without build directories.
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # shellcheck disable=SC2016 # the inner sh expands "$f"
  (cd "$root" && git ls-files -z --cached --others --exclude-standard \
     | xargs -0 -r sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh \
     | tar --null -T - -cf -) | tar -C "$src" -xf -
else
  tar -C "$root" --exclude='./build*' --exclude=./.git --exclude=./out -cf - . | tar -C "$src" -xf -
fi

jobs=$(nproc)
targets=all
[ "${COMPAT_QUICK:-0}" != 1 ] || targets=zmm

# text_sha FILE: sha256 of the .text section.
text_sha() {
  objcopy -O binary -j .text "$1" text.bin
  sha256sum <text.bin | cut -d' ' -f1
  rm -f text.bin
}

build_zmm() {
  if ! cmake -S "$src" -B build -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=RelWithDebInfo >configure.log 2>&1; then
    tail -n 40 configure.log >&2
    return 1
  fi
  echo "configure: ok"
  if ! make -C build -j"$jobs" "$targets" >make.log 2>&1; then
    grep -E -B2 -A8 'error|Error' make.log | tail -n 60 >&2
    return 1
  fi
  echo "make $targets: ok"
  echo "libzmm.so .text sha256 $(text_sha build/libzmm.so)"
  [ "$targets" = all ] || return 0
  echo "unit_tests .text sha256 $(text_sha build/tests/unit/unit_tests)"
  # The unit tests print their own "zmm:" lines (warnings they provoke on
  # purpose) to stderr: kept in unit.log, shown only when they fail.
  if ! build/tests/unit/unit_tests --log_level=test_suite --report_level=short >unit.log 2>&1; then
    tail -n 60 unit.log >&2
    return 1
  fi
  grep -E 'test cases? out of' unit.log
}

compat_compare selfbuild build_zmm
compat_finish
