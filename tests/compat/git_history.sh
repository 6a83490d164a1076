#!/usr/bin/env bash
# compat test: git on a generated repository with a few hundred commits (300;
# COMPAT_QUICK=1: 40): ~120 files edited a few at a time, files added,
# deleted and renamed, seven topic branches merged, four annotated tags;
# then log -p, log --stat, blame, gc --aggressive, fsck, a --no-local clone
# (pack-objects and index-pack) and archive. Every git process, and the
# helpers gc and clone start, runs under the preload in the zmm run; the whole
# session's stdout must match the plain run's. Fixed identities and dates
# make every object id reproducible.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require git git
compat_git_identity

commits=300
[ "${COMPAT_QUICK:-0}" != 1 ] || commits=40
topic_every=$((commits / 7))   # a topic branch, merged two commits later
tag_every=$((commits / 5))     # tags v1 .. v4
nfiles=120
words=(zend chunk bin page heap slot run huge request leak arena cache free alloc mmap brk)
nw=${#words[@]}

# write_file PATH I REV: file I at revision REV; a revision changes every
# ninth line and the length, so diffs are partial, not rewrites.
write_file() {
  local p=$1 i=$2 r=$3 l n
  n=$((20 + (i * 3 + r) % 40))
  {
    printf 'file %d revision %d\n' "$i" "$r"
    for ((l = 1; l <= n; l++)); do
      if (((l + r) % 9 == 0)); then
        printf 'line %d of %d: changed in revision %d %s\n' "$l" "$i" "$r" "${words[(l * r + i) % nw]}"
      else
        printf 'line %d of %d: %s %s\n' "$l" "$i" "${words[(l + i) % nw]}" "${words[(l * i) % nw]}"
      fi
    done
  } >"$p"
}

path_of() { echo "d$(($1 % 8))/f$1.txt"; }

commit_at() {   # commit_at N MESSAGE...: commit everything with dates from N
  export GIT_AUTHOR_DATE="@$((1700000000 + $1 * 3600)) +0000"
  export GIT_COMMITTER_DATE="@$((1700000000 + $1 * 3600 + 600)) +0000"
  shift
  git add -A
  git commit -q "$@"
}

build_history() {
  git init -q -b main repo
  cd repo
  git config core.autocrlf false
  git config gc.auto 0
  local c i k t d
  local -A rev=() gone=()
  for ((i = 0; i < nfiles; i++)); do
    mkdir -p "d$((i % 8))"
    rev[$i]=0
    write_file "$(path_of "$i")" "$i" 0
  done
  commit_at 0 -m "initial import" -m "$nfiles files."
  for ((c = 1; c < commits; c++)); do
    for ((i = 0; i < nfiles; i++)); do
      if [ -z "${gone[$i]:-}" ] && (((i * 7 + c) % 29 == 0)); then
        rev[$i]=$((rev[$i] + 1))
        write_file "$(path_of "$i")" "$i" "${rev[$i]}"
      fi
    done
    if ((c % 10 == 0)); then
      mkdir -p new
      write_file "new/n$c.txt" "$c" 0
    fi
    if ((c % 37 == 0)); then
      i=$(((c * 13) % nfiles))
      if [ -z "${gone[$i]:-}" ]; then git rm -q "$(path_of "$i")"; gone[$i]=1; fi
    fi
    if ((c % 45 == 0)); then
      i=$(((c * 11 + 5) % nfiles))
      if [ -z "${gone[$i]:-}" ]; then
        git mv "$(path_of "$i")" "d$((i % 8))/renamed$c.txt"
        gone[$i]=1
      fi
    fi
    commit_at "$c" -m "commit $c" -m "Edits the files of commit $c."
    if ((c % topic_every == 0)); then
      k=$((c / topic_every))
      git checkout -q -b "topic$k"
      for ((t = 0; t < 3; t++)); do
        d=topic$k
        mkdir -p "$d"
        write_file "$d/t$t.txt" "$((k * 10 + t))" "$c"
        commit_at "$c" -m "topic $k, step $t"
      done
      git checkout -q main
    fi
    if ((c % topic_every == 2 && c > topic_every)); then
      k=$((c / topic_every))
      export GIT_COMMITTER_DATE="@$((1700000000 + c * 3600 + 900)) +0000"
      git merge -q --no-ff -m "merge topic$k" "topic$k"
    fi
    if ((c % tag_every == 0)); then
      GIT_COMMITTER_DATE="@$((1700000000 + c * 3600 + 1200)) +0000" git tag -a "v$((c / tag_every))" -m "release $((c / tag_every))"
    fi
  done
}

session() {
  build_history
  echo "== counts"
  git rev-list --count HEAD
  git rev-list --count --all
  git branch --format='%(refname:short) %(objectname)'
  git tag -n1
  echo "== log"
  git log --format='%H %ad %s' --date=iso-strict | sed -n 1,20p
  git log --graph --oneline --all | sha256sum
  echo "== log -p (3 commits)"
  git log -p -n 3 --format='%H%n%B' main
  echo "== log -p (all)"
  git log -p --format='%H%n%B' --all | sha256sum
  git log -p -M --stat --format='%H' | sha256sum
  git log --numstat --format='%H' | sha256sum
  echo "== diff"
  git diff --stat v1 HEAD | tail -n 5
  git diff -M v1 v2 | sha256sum
  echo "== blame"
  git blame -s --date=short "$(path_of 11)" | sed -n 1,12p
  git blame -M -C --line-porcelain "$(path_of 13)" | sha256sum
  echo "== grep, shortlog"
  git grep -c 'changed in revision' HEAD -- d1 | sed -n 1,10p
  git shortlog -sn --all
  echo "== gc"
  git gc -q --aggressive --prune=now
  git count-objects -v | grep -E '^(count|in-pack|packs|garbage)'
  git fsck --full --strict --no-progress
  git verify-pack -v .git/objects/pack/pack-*.idx | grep -c -E '^[0-9a-f]{40} (blob|tree|commit|tag)'
  echo "== after gc"
  git log -p --format='%H%n%B' --all | sha256sum
  git rev-list --objects --all | sort | sha256sum
  git archive --format=tar HEAD | sha256sum
  echo "== clone"
  cd ..
  git clone -q --no-local repo clone
  git -C clone log -p --format='%H%n%B' | sha256sum
  git -C clone fsck --full --strict --no-progress
  git -C clone status --porcelain | wc -l
}

compat_compare git session
compat_finish
