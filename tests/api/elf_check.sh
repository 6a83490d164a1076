#!/usr/bin/env bash
# The shape of libzmm.so: it exports the malloc ABI, the interposed loader,
# thread and signal functions and zmm_* (preload/libzmm.map), nothing else;
# and nothing of it runs at every process start that need not: no libgcc
# CPU-feature constructor (__cpu_indicator_init asks cpuid a dozen times,
# each a trip to the hypervisor in a virtual machine: ~20 us a start).
#   elf_check.sh LIBZMM MAPFILE
set -euo pipefail
lib=$1 map=$2
fail() { echo "FAIL: $*"; exit 1; }

# The version script's names (C ones, and the C++ operators as nm prints
# their mangled names), against the dynamic symbols defined.
want=$(sed -n '/global:/,/local:/p' "$map" | sed 's#/\*.*\*/##' | tr ';' '\n' |
  sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z_0-9]*\)[[:space:]]*$/\1/p' | grep -v '^global$' | sort -u)
got=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort -u)
extra=$(comm -13 <(printf '%s\n' "$want") <(printf '%s\n' "$got") | grep -v -e '^zmm_' -e '^_Zn[wa]m' -e '^_Zd[la]Pv' || true)
[ -z "$extra" ] || fail "exported beyond libzmm.map: $(echo $extra)"
missing=$(comm -23 <(printf '%s\n' "$want") <(printf '%s\n' "$got") || true)
[ -z "$missing" ] || fail "libzmm.map names these, libzmm.so does not export them: $(echo $missing)"
ops=$(printf '%s\n' "$got" | grep -c -e '^_Zn[wa]m' -e '^_Zd[la]Pv' || true)
[ "$ops" -eq 20 ] || fail "$ops operator new/delete forms exported, expected 20"

symbols=$(nm "$lib")  # (not piped into grep -q: under pipefail, nm's SIGPIPE would pass it)
if grep -q -e '__cpu_indicator_init' -e '__cpu_model' <<<"$symbols"; then
  fail "libgcc's CPU-feature constructor is linked in (a __builtin_cpu_* call): it runs at every process start"
fi
# And no other constructor (a stripped library too): .init_array holds two,
# zmm's own and crtbegin's frame_dummy. One more is a start-up cost to weigh.
init=$(readelf -SW "$lib" | sed -n 's/.*\] \.init_array *[A-Z_]* *[0-9a-f]* *[0-9a-f]* *\([0-9a-f]*\) .*/\1/p')
[ -n "$init" ] || fail "no .init_array in $lib (readelf -S)"
[ $((16#$init)) -eq 16 ] || fail ".init_array holds $((16#$init / 8)) constructors, expected 2 (zmm_constructor, frame_dummy)"
echo "ok: $(printf '%s\n' "$got" | wc -l) exported symbols, 2 constructors, no start-up cpuid"
