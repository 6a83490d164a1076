# shellcheck shell=bash
# tests/compat/lib.sh: shared by the compatibility drivers (sourced, not run).
#
# A driver runs a real, unmodified program twice, once plain and once with
# LD_PRELOAD=$ZMM_LIB, and compares stdout and exit status. The preloaded run
# also sets ZMM_STATS=1 and ZMM_LOG=<dir>/zmm.%p.log, so every process that
# ran under zmm leaves a file with its heap statistics: that is the proof the
# preload was active (a log file survives programs that close stderr early).
# Any other "zmm:" line (a diagnosis, a warning) in those files or on stderr
# fails the test.
#
#   compat_compare NAME CMD...    CMD may be a shell function; it runs in a
#                                 subshell with errexit, in a fresh empty
#                                 directory, with stdout and stderr captured.
#   compat_under_zmm NAME CMD...  the preloaded run only, for commands that
#                                 judge themselves (exit status 0 = pass).
#   compat_finish                 exit status for the driver.
#   compat_require PROG PACKAGE   fail at once when PROG is not installed.
# For servers on loopback (inside CMD):
#   compat_free_port              a free TCP port on 127.0.0.1.
#   compat_wait_port PORT [SECS]  waits until 127.0.0.1:PORT accepts.
#   compat_as USER CMD...         CMD as USER when root (setpriv), else as is.
#   compat_logged PID WHAT        in the preloaded run, fails unless process
#                                 PID (a server) left its zmm log.
#   compat_scan_log FILE          copies a server log's "zmm:" and dynamic
#                                 loader lines to stderr, where they are judged.
#
# COMPAT_KEEP=1 keeps the temporary directory (outputs, logs) for inspection.
# Set by scripts/compat (the compatibility matrix), optional otherwise:
#   COMPAT_TIMEOUT=SECS  time limit of each run, plain or preloaded: the run
#                        (its own process group) gets SIGTERM, SIGKILL 10 s
#                        later, and the check fails naming the run.
#   COMPAT_TIMES=FILE    each run appends "NAME MODE SECONDS STATUS" to FILE.
#   COMPAT_QUICK=1       drivers that have a size take the small one.
#
# Only the processes CMD starts see LD_PRELOAD: the driver's own bash does not.

set -euo pipefail

if [ -z "${ZMM_LIB:-}" ]; then
  echo "compat: ZMM_LIB is not set (the path of libzmm.so)" >&2
  exit 2
fi
if [ ! -f "$ZMM_LIB" ]; then
  echo "compat: ZMM_LIB=$ZMM_LIB does not exist" >&2
  exit 2
fi
ZMM_LIB=$(realpath "$ZMM_LIB")

# shellcheck disable=SC2034 # COMPAT_DIR and COMPAT_PY are for the drivers
COMPAT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034
COMPAT_PY=/usr/bin/python3   # Debian's, never a pyenv shim on PATH

# A clean, deterministic environment: no inherited preload or zmm options,
# C locale, UTC, a private HOME and TMPDIR inside one directory removed on exit.
unset LD_PRELOAD
while read -r var; do unset "$var"; done < <(compgen -e | grep '^ZMM_' | grep -vx ZMM_LIB || true)
export LC_ALL=C LANG=C TZ=UTC
compat_tmp=$(mktemp -d "${TMPDIR:-/tmp}/zmm-compat.XXXXXX")
if [ "${COMPAT_KEEP:-0}" = 1 ]; then
  trap 'echo "compat: kept $compat_tmp" >&2' EXIT
else
  trap 'rm -rf "$compat_tmp"' EXIT
fi
export HOME=$compat_tmp/home TMPDIR=$compat_tmp/tmp
mkdir -p "$HOME" "$TMPDIR"
# Traversable (not readable) by others: servers that drop privileges
# (postgres, nginx workers) reach their directories and ZMM_LOG below it.
chmod 711 "$compat_tmp"

compat_failures=0
compat_checks=0

# compat_require PROGRAM PACKAGE: the program must exist (scripts/test
# installs the packages); a missing one fails the test rather than skipping it.
compat_require() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "compat: $1 is not installed: apt-get install $2" >&2
    exit 1
  fi
}

# git with no system or user configuration and fixed identities (object ids
# then depend on the content and the dates alone).
compat_git_identity() {
  export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
  export GIT_AUTHOR_NAME="Zend Author" GIT_AUTHOR_EMAIL=author@example.org
  export GIT_COMMITTER_NAME="Zend Committer" GIT_COMMITTER_EMAIL=committer@example.org
}

compat_free_port() {
  "$COMPAT_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

compat_wait_port() {
  local port=$1 tries=$((${2:-30} * 10))
  while ! (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
    tries=$((tries - 1))
    if [ $tries -le 0 ]; then
      echo "compat: nothing listens on 127.0.0.1:$port after ${2:-30}s" >&2
      return 1
    fi
    sleep 0.1
  done
}

compat_as() {
  local user=$1
  shift
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
  else
    "$@"
  fi
}

compat_logged() {
  [ -n "${ZMM_LOG:-}" ] || return 0
  if [ ! -s "${ZMM_LOG//%p/$1}" ]; then
    echo "compat: the $2 (pid $1) left no zmm log: it did not run under zmm, or did not exit cleanly" >&2
    return 1
  fi
}

compat_scan_log() {
  grep -a -e '^zmm: ' -e 'LD_PRELOAD cannot be preloaded' "$1" >&2 || true
}

compat_fail() {
  echo "compat: FAIL: $*" >&2
  compat_failures=$((compat_failures + 1))
}

compat_now() { date +%s.%N; }
compat_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fs", b - a }'; }

# compat_run MODE NAME CMD...: runs CMD in $compat_tmp/NAME.MODE/work,
# leaving stdout, stderr, rc, and elapsed time next to it (and a file
# "timedout" when COMPAT_TIMEOUT ran out: rc is then 124).
compat_run() {
  local mode=$1 name=$2
  shift 2
  local dir=$compat_tmp/$name.$mode
  rm -rf "$dir"
  mkdir -p "$dir/work" "$dir/log"
  chmod 1777 "$dir/log"   # any user the program switches to may log there
  local t0 rc pid wd=
  t0=$(compat_now)
  set +e
  # Job control gives the run a process group of its own, which a time limit
  # (or an interrupted driver) ends as a whole, servers and helpers included.
  [ -z "${COMPAT_TIMEOUT:-}" ] || set -m
  (
    set -e
    cd "$dir/work"
    if [ "$mode" = zmm ]; then
      export LD_PRELOAD=$ZMM_LIB ZMM_STATS=1 ZMM_LOG=$dir/log/zmm.%p.log
    fi
    "$@"
  ) >"$dir/stdout" 2>"$dir/stderr" </dev/null &
  pid=$!
  set +m
  if [ -n "${COMPAT_TIMEOUT:-}" ]; then
    # shellcheck disable=SC2064 # $pid is meant to be expanded now
    trap "kill -TERM -- -$pid 2>/dev/null; exit 130" INT TERM
    (
      trap 'kill "$s" 2>/dev/null; exit 0' TERM
      sleep "$COMPAT_TIMEOUT" & s=$!
      wait "$s"
      : >"$dir/timedout"
      kill -TERM -- "-$pid" 2>/dev/null
      sleep 10 & s=$!
      wait "$s"
      kill -KILL -- "-$pid" 2>/dev/null
    ) </dev/null >/dev/null 2>&1 &
    wd=$!
  fi
  wait "$pid"
  rc=$?
  if [ -n "$wd" ]; then
    kill "$wd" 2>/dev/null
    wait "$wd" 2>/dev/null
    trap - INT TERM
  fi
  set -e
  [ ! -e "$dir/timedout" ] || rc=124
  echo "$rc" >"$dir/rc"
  compat_secs "$t0" "$(compat_now)" >"$dir/time"
  if [ -n "${COMPAT_TIMES:-}" ]; then
    echo "$name $mode $(sed 's/s$//' "$dir/time") $rc" >>"$COMPAT_TIMES"
  fi
}

# compat_status_text NAME MODE: "status N", or the time limit that ran out.
compat_status_text() {
  local d=$compat_tmp/$1.$2
  if [ -e "$d/timedout" ]; then
    echo "timed out after ${COMPAT_TIMEOUT}s (killed)"
  else
    echo "status $(cat "$d/rc")"
  fi
}

# compat_show_stderr NAME MODE: the tail of a run's stderr, for a failure.
compat_show_stderr() {
  local f=$compat_tmp/$1.$2/stderr
  if [ -s "$f" ]; then
    echo "--- stderr of the $2 run (last 40 lines):" >&2
    tail -n 40 "$f" >&2
  fi
}

# compat_check_zmm NAME: the preloaded run left heap statistics and no
# diagnosis. Prints the number of processes that ran under zmm.
compat_check_zmm() {
  local name=$1 dir=$compat_tmp/$1.zmm ok=1
  local nstats
  nstats=$(grep -l '^zmm: heap statistics' "$dir"/log/zmm.*.log 2>/dev/null | wc -l || true)
  if [ "$nstats" -eq 0 ]; then
    compat_fail "$name: no process wrote 'zmm: heap statistics' to ZMM_LOG: the preload was not active"
    ok=0
  fi
  if grep -aq 'LD_PRELOAD cannot be preloaded' "$dir/stderr"; then
    compat_fail "$name: the dynamic loader could not preload zmm:"
    grep -a 'LD_PRELOAD cannot be preloaded' "$dir/stderr" | sort | uniq -c | head -n 5 >&2 || true
    ok=0
  fi
  local other
  other=$(cat "$dir"/log/zmm.*.log "$dir/stderr" 2>/dev/null \
            | grep -a '^zmm: ' | grep -av '^zmm: heap statistics' || true)
  if [ -n "$other" ]; then
    compat_fail "$name: zmm reported:"
    printf '%s\n' "$other" | sort | uniq -c | sort -rn | head -n 20 >&2
    ok=0
  fi
  COMPAT_NPROC=$nstats
  [ $ok -eq 1 ]
}

compat_compare() {
  local name=$1
  shift
  compat_checks=$((compat_checks + 1))
  compat_run plain "$name" "$@"
  compat_run zmm "$name" "$@"
  local p=$compat_tmp/$name.plain z=$compat_tmp/$name.zmm ok=1
  local prc zrc
  prc=$(cat "$p/rc")
  zrc=$(cat "$z/rc")
  if [ "$prc" -ne 0 ]; then
    compat_fail "$name: the plain run (no preload) failed, $(compat_status_text "$name" plain): the test itself is broken"
    compat_show_stderr "$name" plain
    return 0
  fi
  if [ "$zrc" -ne "$prc" ]; then
    compat_fail "$name: $(compat_status_text "$name" zmm) under zmm, status $prc plain (in $(cat "$p/time"))"
    compat_show_stderr "$name" zmm
    ok=0
  fi
  if ! cmp -s "$p/stdout" "$z/stdout"; then
    compat_fail "$name: stdout differs under zmm (diff plain zmm, first 60 lines):"
    diff -u --label plain --label zmm "$p/stdout" "$z/stdout" | head -n 60 >&2 || true
    [ $ok -eq 0 ] || compat_show_stderr "$name" zmm
    ok=0
  fi
  if [ ! -s "$p/stdout" ]; then
    compat_fail "$name: the plain run printed nothing: nothing was compared"
    ok=0
  fi
  compat_check_zmm "$name" || ok=0
  if [ $ok -eq 1 ]; then
    echo "compat: ok: $name: $(wc -l <"$p/stdout") lines identical, status $prc;" \
         "plain $(cat "$p/time"), zmm $(cat "$z/time"), $COMPAT_NPROC process(es) under zmm"
  fi
}

compat_under_zmm() {
  local name=$1
  shift
  compat_checks=$((compat_checks + 1))
  compat_run zmm "$name" "$@"
  local z=$compat_tmp/$name.zmm ok=1 zrc
  zrc=$(cat "$z/rc")
  if [ "$zrc" -ne 0 ]; then
    compat_fail "$name: $(compat_status_text "$name" zmm) under zmm"
    echo "--- stdout (last 60 lines):" >&2
    tail -n 60 "$z/stdout" >&2
    compat_show_stderr "$name" zmm
    ok=0
  fi
  compat_check_zmm "$name" || ok=0
  if [ $ok -eq 1 ]; then
    echo "compat: ok: $name: status 0 under zmm in $(cat "$z/time"), $COMPAT_NPROC process(es) under zmm"
  fi
}

compat_finish() {
  if [ "$compat_failures" -ne 0 ]; then
    echo "compat: $compat_failures failure(s) in $compat_checks check(s)" >&2
    exit 1
  fi
  echo "compat: all $compat_checks check(s) passed"
}
