# Shared by scripts/zmm, scripts/test and scripts/bench: where things are,
# which Debian packages the project needs, and how to get them.
# shellcheck shell=bash

ZMM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZMM_BUILD_DIR=${ZMM_BUILD_DIR:-$ZMM_ROOT/build}

# Packages to build libzmm.so and its unit tests.
ZMM_BUILD_PACKAGES=(cmake ninja-build g++ libunwind-dev libdw-dev libboost-test-dev)

zmm_say() { printf 'zmm: %s\n' "$*" >&2; }

# Installs the Debian packages in "$@" that are missing: with apt-get when
# root, otherwise says which are missing and fails.
zmm_ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    zmm_say "missing Debian packages: ${missing[*]}"
    zmm_say "install them with: sudo apt-get install ${missing[*]}"
    return 1
  fi
  zmm_say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
  fi
}

# Configures (once) and builds the tree in $1 (default: the main build) with
# the extra CMake arguments that follow; only $ZMM_BUILD_TARGET if set (the
# wrapper needs libzmm.so alone, not the tests).
zmm_build() {
  local dir=${1:-$ZMM_BUILD_DIR}; shift || true
  zmm_ensure_packages "${ZMM_BUILD_PACKAGES[@]}" || return 1
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S "$ZMM_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null || return 1
  fi
  cmake --build "$dir" ${ZMM_BUILD_TARGET:+--target "$ZMM_BUILD_TARGET"} -- -j"$(nproc)" >"$dir.log" 2>&1 ||
    { cat "$dir.log" >&2; return 1; }
}
