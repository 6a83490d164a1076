#!/usr/bin/env bash
# Workload for the bash compatibility test: string building, pattern
# substitution, indexed and associative arrays, printf, in a loop of a few tens
# of thousands of iterations. Run by bash.sh, plain and under the preload.
set -euo pipefail

words=(zend chunk bin page heap slot run huge request leak arena cache free alloc mmap)
declare -A count=() longest=()
declare -a ring=()
acc=""
total=0
seed=12345

for ((i = 0; i < 40000; i++)); do
  seed=$(((seed * 1103515245 + 12345) % 2147483648))
  w=${words[seed % ${#words[@]}]}
  x="$w-$i-${w^^}"
  x=${x//a/4}
  x=${x//e/3}
  x=${x/#z/Z}
  x=${x%%-*}:${x#*-}
  count[$w]=$((${count[$w]:-0} + 1))
  cur=${longest[$w]:-}
  if ((${#x} > ${#cur})); then longest[$w]=$x; fi
  ring[i % 257]=$x
  acc+="${x:0:3}"
  if ((${#acc} > 4096)); then
    total=$((total + ${#acc}))
    acc=${acc:2048}
  fi
  if ((i % 500 == 0)); then
    printf '%6d %-20s %08x %s\n' "$i" "$x" "$seed" "${#acc}"
  fi
done

printf 'total %d, acc %d\n' "$total" "${#acc}"
for k in $(printf '%s\n' "${!count[@]}" | sort); do
  printf '%-8s %6d %s\n' "$k" "${count[$k]}" "${longest[$k]:-}"
done

# array surgery: slices, deletion, reassembly
joined=$(IFS=,; echo "${ring[*]}")
printf 'ring %d entries, %d chars\n' "${#ring[@]}" "${#joined}"
IFS=, read -r -a back <<<"$joined"
printf 'split back into %d\n' "${#back[@]}"
for ((i = 0; i < ${#back[@]}; i += 3)); do unset 'back[i]'; done
back=("${back[@]}")
printf 'after unset %d: %s\n' "${#back[@]}" "${back[*]:0:5}"
sorted=$(printf '%s\n' "${back[@]}" | sort | uniq -c | sort -k1,1nr -k2 | sed -n 1,10p)   # sed reads it all: no SIGPIPE under pipefail
printf '%s\n' "$sorted"

# a large associative array, filled and emptied
declare -A big=()
for ((i = 0; i < 20000; i++)); do
  printf -v v '%05d' "$i"
  big["key$((i * 7 % 20000))"]=$v
done
sum=0
for k in "${!big[@]}"; do sum=$((sum + 10#${big[$k]})); done
printf 'big: %d keys, sum %d\n' "${#big[@]}" "$sum"
for ((i = 0; i < 20000; i += 2)); do unset "big[key$i]"; done
printf 'big after unset: %d keys\n' "${#big[@]}"

# long strings: repeated doubling and global substitution
s=ab
for ((i = 0; i < 12; i++)); do s+=$s; done
t=${s//ab/xyz}
u=${t//z/}
printf 'strings: %d %d %d\n' "${#s}" "${#t}" "${#u}"
printf '%s\n' "$u" | md5sum
