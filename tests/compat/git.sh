#!/usr/bin/env bash
# compat test: git (every git process, and the helpers git gc starts, under the
# preload) building a repository of ~200 files over several commits with fixed
# identities and dates, then log --stat, log -p, ls-tree, gc and fsck.
# The whole session's stdout, plain and preloaded, must match.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require git git
compat_git_identity

# write_files COMMIT: creates or rewrites a deterministic set of files.
write_files() {
  local c=$1 d f i
  for d in src lib docs tests/unit tests/data vendor/pkg0 vendor/pkg1 vendor/pkg2; do
    mkdir -p "$d"
  done
  for i in $(seq 0 199); do
    case $((i % 6)) in
      0) d=src ;; 1) d=lib ;; 2) d=docs ;; 3) d=tests/unit ;; 4) d=tests/data ;;
      *) d=vendor/pkg$((i % 3)) ;;
    esac
    f=$d/file$i.txt
    # commit 0 creates every file; later commits touch a changing subset
    if [ "$c" -eq 0 ] || [ $(((i + c) % (c + 2))) -eq 0 ]; then
      {
        echo "file $i, revision $c"
        seq -f "line %g of file $i" 1 $((5 + (i * 7 + c) % 40))
        printf 'payload %s\n' "$(printf '%0*d' $((i % 50 + 1)) "$c")"
      } >"$f"
    fi
  done
  if [ "$c" -ge 2 ]; then
    rm -f "src/file$((c * 6)).txt"
    git mv -f "lib/file$((c * 6 + 1)).txt" "lib/moved$c.txt"
  fi
}

session() {
  git init -q -b main repo
  cd repo
  git config core.autocrlf false
  git config gc.auto 0
  local c
  for c in 0 1 2 3 4 5; do
    export GIT_AUTHOR_DATE="2024-01-0$((c + 1))T12:00:00+00:00"
    export GIT_COMMITTER_DATE="2024-01-0$((c + 1))T12:30:00+00:00"
    write_files "$c"
    git add -A
    git commit -q -m "commit $c" -m "Touches files of revision $c."
    if [ "$c" -eq 3 ]; then
      git tag -a v1 -m "tag at 3"
      git checkout -q -b side
      echo "side branch" >docs/side.txt
      git add docs/side.txt
      git commit -q -m "side"
      git checkout -q main
    fi
  done
  git merge -q --no-ff -m "merge side" side
  echo "== log --stat"
  git log --stat --format='%H %an <%ae> %ad %cn %cd%n%s%n%b' --date=iso-strict
  echo "== log -p sha256"
  git log -p --format='%H%n%B' | sha256sum
  echo "== diff v1 HEAD --stat"
  git diff --stat v1 HEAD
  echo "== ls-tree"
  git ls-tree -r -l HEAD | sed -n 1,50p
  git ls-tree -r HEAD | sha256sum
  echo "== blame"
  git blame -s --date=short lib/moved5.txt | sed -n 1,20p
  echo "== gc"
  git gc -q --aggressive --prune=now
  git count-objects -v | grep -E '^(count|in-pack|packs|garbage)'
  git fsck --full --strict --no-progress
  git verify-pack -v .git/objects/pack/pack-*.idx | grep -c -E '^[0-9a-f]{40} (blob|tree|commit|tag)'
  echo "== log after gc"
  git log --oneline --graph --all
  git rev-list --objects --all | sort | sha256sum
  git archive --format=tar HEAD | sha256sum
}

compat_compare git session
compat_finish
