#!/usr/bin/env bash
# GET /db (one row by random id from the 10,000-row world table): the demo
# cluster (2 workers) against one process booting the same worker (same
# handlers, middleware, pool settings and query), on SQLite and on
# PostgreSQL, in the same run.
#
# Usage: bench/db.sh [ROUNDS] [DURATION]      (default 5 rounds of 10s)
# PostgreSQL: the local server (DATABASE_URL overrides the admin URL);
# a database ringmaster_bench_PID is created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh "$@"
admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
pgdb=ringmaster_bench_$$
psql "$admin" -qc "CREATE DATABASE $pgdb"
trap 'cleanup; psql "$admin" -qc "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)"' EXIT

declare -A url=([sqlite]="sqlite://$work/bench.db" [postgres]="${admin%/*}/$pgdb")
servers=""
for db in sqlite postgres; do
  backend=$(printf '[backends.main]\nurl = "%s"\n' "${url[$db]}")
  printf '[groups.web]\n%s\n' "$backend" > "$work/migrate-$db.toml"
  RINGMASTER_LOG=warn target/release/ringmaster-demo migrate --config "$work/migrate-$db.toml"
  start_baseline "baseline-$db" "${url[$db]}"
  start_cluster "cluster-$db" reuseport "$backend"
  servers+="baseline-$db cluster-$db "
done
for s in $servers; do wait_up "$s" /db; done
for db in sqlite postgres; do
  measure "$rounds" "$duration" "db" "baseline-$db cluster-$db"
  unset results; declare -A results
done
