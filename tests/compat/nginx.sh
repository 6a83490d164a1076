#!/usr/bin/env bash
# compat test: nginx (a master and two worker processes, gzip on) serving
# static files on a free loopback port under a bounded load: curl fetches
# each file (plain, gzip, a range, a 404) and checks its sha256, then ab
# (apache2-utils) sends N requests with 8 concurrent connections, keep-alive
# and gzip, and N more with a new connection each; the access log must count
# every request. Then a graceful stop (SIGQUIT). Plain and preloaded runs
# must print the same; in the zmm run nginx, curl and ab are all on zmm's
# heap, and the nginx master must leave its zmm log.
# COMPAT_QUICK=1: N = 1000, otherwise 10000.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require nginx nginx
compat_require ab apache2-utils
compat_require curl curl
requests=10000
[ "${COMPAT_QUICK:-0}" != 1 ] || requests=1000

# make_site DIR: deterministic files of 1 KiB, ~100 KiB (text, compressible)
# and 4 MiB (binary).
make_site() {
  local i
  mkdir -p "$1"
  for ((i = 0; i < 16; i++)); do printf 'line %02d of the small file, zend heap chunk bin page\n' "$i"; done >"$1/small.txt"
  for ((i = 0; i < 2000; i++)); do printf 'line %04d: request %d, size class %d, arena %x\n' "$i" $((i * 7919 % 10007)) $((i % 39)) $((i * 2654435761 % 65536)); done >"$1/medium.txt"
  "$COMPAT_PY" -c 'import hashlib, sys
seed = b"zmm"
out = bytearray()
while len(out) < 4 << 20:
    seed = hashlib.sha256(seed).digest()
    out += seed
sys.stdout.buffer.write(out)' >"$1/big.bin"
}

nginx_session() {
  local port server rc=0 user=""
  [ "$(id -u)" -ne 0 ] || user="user nobody nogroup;"
  port=$(compat_free_port)
  make_site "$PWD/www"
  mkdir -p logs tmp
  cat >nginx.conf <<CONF
$user
worker_processes 2;
daemon off;
master_process on;
pid $PWD/nginx.pid;
error_log $PWD/logs/error.log warn;
events { worker_connections 512; }
http {
  access_log $PWD/logs/access.log;
  client_body_temp_path $PWD/tmp/body;
  proxy_temp_path $PWD/tmp/proxy;
  fastcgi_temp_path $PWD/tmp/fastcgi;
  uwsgi_temp_path $PWD/tmp/uwsgi;
  scgi_temp_path $PWD/tmp/scgi;
  types { text/plain txt; application/octet-stream bin; }
  sendfile off;
  keepalive_requests 1000;
  gzip on;
  gzip_min_length 0;
  gzip_comp_level 6;
  gzip_http_version 1.0;   # ab speaks HTTP/1.0
  gzip_types text/plain;
  server {
    listen 127.0.0.1:$port;
    root $PWD/www;
  }
}
CONF
  nginx -p "$PWD" -c "$PWD/nginx.conf" >server.log 2>&1 &
  server=$!
  trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; tail -n 20 logs/error.log server.log >&2' EXIT
  compat_wait_port "$port"
  local url=http://127.0.0.1:$port f
  echo "== files"
  for f in small.txt medium.txt big.bin; do
    echo "$f: $(sha256sum <"www/$f" | cut -c1-16) on disk"
    echo "$f: $(curl -fsS "$url/$f" | sha256sum | cut -c1-16) plain"
    echo "$f: $(curl -fsS --compressed "$url/$f" | sha256sum | cut -c1-16) gzip"
    echo "$f: $(curl -fsS -H 'Accept-Encoding: gzip' "$url/$f" | wc -c) bytes gzip-encoded"
  done
  echo "range: $(curl -fsS -r 1000-1999 "$url/big.bin" | sha256sum | cut -c1-16) $(dd if=www/big.bin bs=1000 skip=1 count=1 status=none | sha256sum | cut -c1-16)"
  echo "missing: $(curl -s -o /dev/null -w '%{http_code}' "$url/nothing.txt")"
  echo "== ab"
  local keep='^(Document Length|Complete requests|Failed requests|Non-2xx responses)'
  ab -q -n "$requests" -c 8 -k -H 'Accept-Encoding: gzip' "$url/medium.txt" >ab1.log 2>&1 || { cat ab1.log >&2; return 1; }
  grep -E "$keep" ab1.log
  ab -q -n "$requests" -c 8 "$url/small.txt" >ab2.log 2>&1 || { cat ab2.log >&2; return 1; }
  grep -E "$keep" ab2.log
  ab -q -n $((requests / 20)) -c 4 -k "$url/big.bin" >ab3.log 2>&1 || { cat ab3.log >&2; return 1; }
  grep -E "$keep" ab3.log
  kill -QUIT "$server"   # graceful: workers finish, then everything exits
  wait "$server" || rc=$?
  trap - EXIT
  echo "server: stopped, status $rc"
  echo "access log: $(wc -l <logs/access.log) requests, $(grep -c '" 200 ' logs/access.log) with status 200"
  if grep -E '\[(alert|crit|emerg)\]' logs/error.log >&2; then return 1; fi
  compat_scan_log logs/error.log
  compat_scan_log server.log
  compat_logged "$server" "nginx master"
}

compat_compare nginx nginx_session
compat_finish
