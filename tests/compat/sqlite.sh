#!/usr/bin/env bash
# compat test: the sqlite3 shell running a scripted workload on an on-disk
# database (recursive-CTE inserts, indexes, GROUP BY / ORDER BY / LIKE, joins,
# window functions, updates, VACUUM), plain and under the preload; stdout and
# exit status must match, along with a dump of the final database.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require sqlite3 sqlite3

workload() {
  sqlite3 test.db <"$COMPAT_DIR/sqlite_workload.sql"
  echo "== dump"
  sqlite3 test.db .dump | sha256sum
}

compat_compare sqlite3 workload
compat_finish
