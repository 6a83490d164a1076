#!/usr/bin/env bash
# tests/fuzz/run.sh: builds the libFuzzer harnesses of core's heap with clang
# (ASan + UBSan + libFuzzer) and runs them for a bounded time.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS (default 60) is the whole budget, split evenly between the targets
# (default: fuzz_heap fuzz_heaps). Each target keeps its corpus in
# $ZMM_FUZZ_BUILD/corpus/TARGET (default build dir: build/fuzz), so a later
# run starts where the last one stopped; crashes are written to
# $ZMM_FUZZ_BUILD/artifacts/. Prints executions, executions per second and
# the exit status of each target. Exits 0 if every target ran clean, 1 on a
# crash or build failure, 77 (skipped) if clang++ with libFuzzer is missing.
#
# Environment:
#   ZMM_FUZZ_BUILD   where objects, binaries, corpora and crashes go
#   CLANGXX          the clang++ to use (default: clang++, then clang++-NN)
#   ZMM_FUZZ_ARGS    extra libFuzzer arguments (e.g. "-jobs=2 -workers=2")
#   ZMM_FUZZ_BUILD_ONLY=1  build the targets and stop
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/tests/fuzz
build=${ZMM_FUZZ_BUILD:-$root/build/fuzz}
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_heap fuzz_heaps)

say() { printf 'fuzz: %s\n' "$*"; }

case $seconds in
  ''|*[!0-9]*) say "usage: $0 [SECONDS] [TARGET...]"; exit 2 ;;
esac

# ---- a clang++ that can link libFuzzer ----
find_clang() {
  local c
  for c in ${CLANGXX:-} clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    command -v "$c" >/dev/null 2>&1 && { echo "$c"; return 0; }
  done
  return 1
}
cxx=$(find_clang) || {
  say "SKIPPED: no clang++ found. On Debian 12: apt-get install clang libclang-rt-14-dev"
  exit 77
}
mkdir -p "$build/obj" "$build/artifacts" || exit 1
probe=$build/probe.cpp
printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
  'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' >"$probe"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe" -o "$build/probe" >"$build/probe.log" 2>&1; then
  say "SKIPPED: $cxx cannot link -fsanitize=fuzzer,address,undefined (libFuzzer and the sanitizer"
  say "runtimes are in Debian 12's libclang-rt-14-dev: apt-get install clang libclang-rt-14-dev)"
  sed 's/^/fuzz:   /' "$build/probe.log" | head -5
  exit 77
fi

# ---- build: core's sources (ZMM_CORE_SOURCES) as an archive, then each harness ----
sources=$(sed -n '/set(ZMM_CORE_SOURCES/,/)/p' "$root/core/CMakeLists.txt" |
          sed 's/set(ZMM_CORE_SOURCES//; s/)//' | tr -s ' \n\t' '\n' | grep '\.cpp$')
[ -n "$sources" ] || sources=$(cd "$root/core" && ls ./*.cpp | sed 's|^\./||')
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all -I "$root/core")
lib_flags=("${flags[@]}" -fsanitize=fuzzer-no-link,address,undefined)
exe_flags=("${flags[@]}" -fsanitize=fuzzer,address,undefined)

# Rebuilt when anything under core/ or tests/fuzz/ (or the compiler, or this
# script) is newer than the stamp of the last good build.
stamp=$build/built.stamp
need_build=0
[ -f "$stamp" ] || need_build=1
if [ $need_build -eq 0 ] && [ -n "$(find "$root/core" "$here" "$(command -v "$cxx")" -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  need_build=1
fi
for t in "${targets[@]}"; do [ -x "$build/$t" ] || need_build=1; done

if [ $need_build -eq 1 ]; then
  say "building with $cxx ($("$cxx" --version | head -1)) in $build"
  rm -f "$stamp" "$build"/obj/*.o "$build/libzmm_core_fuzz.a"
  touch "$stamp.new"  # taken before compiling: a source edited meanwhile is rebuilt next time
  export cxx build root
  # shellcheck disable=SC2016
  if ! printf '%s\n' $sources | xargs -P "$(nproc)" -I{} sh -c \
      '"$cxx" "$@" -c "$root/core/{}" -o "$build/obj/{}.o" 2>>"$build/obj/{}.log" || { cat "$build/obj/{}.log" >&2; exit 255; }' \
      sh "${lib_flags[@]}"; then
    say "FAILED: building core with $cxx"
    exit 1
  fi
  ar rcs "$build/libzmm_core_fuzz.a" "$build"/obj/*.o || exit 1
  for t in fuzz_heap fuzz_heaps; do
    if ! "$cxx" "${exe_flags[@]}" "$here/$t.cpp" "$build/libzmm_core_fuzz.a" -o "$build/$t" -ldl -lpthread; then
      say "FAILED: linking $t"
      exit 1
    fi
  done
  mv "$stamp.new" "$stamp"
fi
[ "${ZMM_FUZZ_BUILD_ONLY:-0}" = 1 ] && { say "built: ${targets[*]} in $build"; exit 0; }

# ---- run ----
per=$(( seconds / ${#targets[@]} ))
[ $per -lt 1 ] && per=1
# No leak checks per input: neither the harness nor the heap under test
# calls malloc (zmm maps its own memory), so there is nothing to find.
# shellcheck disable=SC2206
extra=(${ZMM_FUZZ_ARGS:-})
status=0
summary=()
for t in "${targets[@]}"; do
  # Inputs that once failed (tests/fuzz/regressions/TARGET): each run once, first.
  regressions=$here/regressions/$t
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    if "$build/$t" -detect_leaks=0 -rss_limit_mb=4096 "$regressions"/* >"$build/$t.regressions.log" 2>&1; then
      say "$t: $(ls "$regressions" | wc -l) regression inputs pass"
    else
      status=1
      say "$t FAILED a regression input (tests/fuzz/regressions/$t); the end of its log ($build/$t.regressions.log):"
      grep -E 'zmm-fuzz: FAILED|zmm: |ERROR: |SUMMARY: |runtime error|Running: ' "$build/$t.regressions.log" | head -20 | sed 's/^/fuzz:   /'
    fi
  fi
  corpus=$build/corpus/$t
  mkdir -p "$corpus"
  # The seeds (tests/fuzz/seeds/TARGET, read only): a corpus minimized from
  # long runs, so that a short run (CI's) starts deep, not from nothing.
  seeds=()
  [ -d "$here/seeds/$t" ] && seeds=("$here/seeds/$t")
  log=$build/$t.log
  say "running $t for ${per}s (corpus $corpus, $(ls "$corpus" | wc -l) inputs${seeds:+; seeds ${seeds[0]#"$root"/}, $(ls "${seeds[0]}" | wc -l) inputs})"
  "$build/$t" -max_total_time="$per" -max_len=4096 -timeout=30 -rss_limit_mb=4096 -detect_leaks=0 \
    -error_exitcode=1 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" "${extra[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  line="$t: ${execs:-?} executions, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l), exit $rc"
  say "$line"
  summary+=("$line")
  if [ $rc -ne 0 ]; then
    status=1
    say "$t FAILED; the end of its log ($log):"
    grep -E 'zmm-fuzz: FAILED|zmm: |ERROR: |SUMMARY: |runtime error|Test unit written to' "$log" | head -20 | sed 's/^/fuzz:   /'
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ -n "$crash" ]; then
      say "reproduce: $build/$t $crash"
      say "trace the operations: ZMM_FUZZ_TRACE=1 $build/$t $crash"
      say "minimize: $build/$t -minimize_crash=1 -runs=20000 $crash"
    fi
  fi
done
say "summary:"
for line in "${summary[@]}"; do say "  $line"; done
exit $status
