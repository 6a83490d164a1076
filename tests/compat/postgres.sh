#!/usr/bin/env bash
# compat test: PostgreSQL 15 with pgbench on loopback. A fresh cluster
# (initdb into the run's directory, as the postgres user when run as root),
# the server started on 127.0.0.1 with a free port, `pgbench -i`, a TPC-B-like
# `pgbench -c 4 -t N` with a fixed --random-seed, a select-only run with a
# new connection per transaction (-C), then queries that check the data (row
# counts, balance sums, which a fixed seed makes independent of how the
# clients interleave) and a fast shutdown. The postmaster forks a backend per
# connection, plus its auxiliary processes: in the zmm run every one of them,
# initdb, pgbench and psql run under the preload, and the postmaster must
# leave its zmm log. COMPAT_QUICK=1: scale 1, -t 200, 100 connections;
# otherwise scale 10, -t 1000, 400 connections and a select-only run with 8
# clients.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

pgbin=/usr/lib/postgresql/15/bin
compat_require "$pgbin/postgres" postgresql-15
compat_require "$pgbin/pgbench" postgresql-client-15
pguser=postgres   # the account the server runs as when this runs as root

scale=10 tpcb=1000 connects=100
[ "${COMPAT_QUICK:-0}" != 1 ] || { scale=1 tpcb=200 connects=25; }

pg_session() {
  local data=$PWD/data sock=$PWD/sock port server
  mkdir -p "$data" "$sock"
  chmod 700 "$data"
  [ "$(id -u)" -ne 0 ] || chown "$pguser:" "$data" "$sock"
  compat_as "$pguser" "$pgbin/initdb" -D "$data" -U zmm --auth=trust --no-sync \
    -E UTF8 --locale=C >initdb.log 2>&1 || { cat initdb.log >&2; return 1; }
  echo "initdb: ok"
  port=$(compat_free_port)
  compat_as "$pguser" "$pgbin/postgres" -D "$data" -k "$sock" -p "$port" \
    -c listen_addresses=127.0.0.1 -c max_connections=30 -c shared_buffers=32MB \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c logging_collector=off -c work_mem=8MB >server.log 2>&1 &
  server=$!   # the subshell running compat_as: signals go through pg_ctl
  # A failing step must not leave the server running.
  trap 'compat_as "$pguser" "$pgbin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1;
        wait "$server"; tail -n 30 server.log >&2' EXIT
  local tries=300
  until "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port"; do
    tries=$((tries - 1))
    [ $tries -gt 0 ] || { echo "postgres did not start" >&2; return 1; }
    sleep 0.1
  done
  echo "server: ready"
  local pmpid
  pmpid=$(head -n 1 "$data/postmaster.pid")
  local conn=(-h 127.0.0.1 -p "$port" -U zmm)
  "$pgbin/pgbench" "${conn[@]}" -i -s "$scale" -q postgres >init.log 2>&1 || { cat init.log >&2; return 1; }
  echo "pgbench -i -s $scale: ok"
  local keep='^(transaction type|scaling factor|query mode|number of clients|number of threads|number of transactions|number of failed)'
  "$pgbin/pgbench" "${conn[@]}" -c 4 -j 2 -t "$tpcb" --random-seed=20240601 postgres >tpcb.log 2>&1 || { cat tpcb.log >&2; return 1; }
  grep -E "$keep" tpcb.log
  # -C: a new connection, so a new backend process, for every transaction
  "$pgbin/pgbench" "${conn[@]}" -n -C -S -c 4 -j 2 -t "$connects" --random-seed=7 postgres >connect.log 2>&1 || { cat connect.log >&2; return 1; }
  grep -E "$keep" connect.log
  if [ "$scale" -gt 1 ]; then
    "$pgbin/pgbench" "${conn[@]}" -n -S -c 8 -j 2 -t 2000 --random-seed=7 postgres >select.log 2>&1 || { cat select.log >&2; return 1; }
    grep -E "$keep" select.log
  fi
  "$pgbin/psql" "${conn[@]}" -X -q -A -t -v ON_ERROR_STOP=1 postgres <<'SQL'
select 'accounts', count(*), sum(abalance) from pgbench_accounts;
select 'tellers', count(*), sum(tbalance) from pgbench_tellers;
select 'branches', count(*), sum(bbalance) from pgbench_branches;
select 'history', count(*), sum(delta) from pgbench_history;
select 'balanced', (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history);
-- sorts, hashing and aggregation inside the backend
select 'sorted', md5(string_agg(aid::text || ':' || abalance, ',' order by abalance, aid)) from pgbench_accounts;
select 'grouped', count(*), md5(string_agg(g::text, ',' order by g)) from
  (select bid, sum(abalance) g from pgbench_accounts group by bid) s;
select 'joined', count(*) from pgbench_history h join pgbench_accounts a using (aid) where a.abalance <> 0;
create table words as select i, md5(i::text) || repeat('zend', i % 50) w from generate_series(1, 50000) i;
create index on words (w);
select 'words', count(*), md5(string_agg(w, '' order by w)) from words where w like 'a%';
SQL
  compat_as "$pguser" "$pgbin/pg_ctl" -D "$data" -m fast -w stop >stop.log 2>&1 || { cat stop.log >&2; return 1; }
  local rc=0
  wait "$server" || rc=$?
  trap - EXIT
  echo "server: stopped, status $rc"
  compat_scan_log server.log
  compat_logged "$pmpid" postmaster
}

compat_compare postgresql pg_session
compat_finish
