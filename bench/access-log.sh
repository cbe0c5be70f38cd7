#!/usr/bin/env bash
# The access log's cost on /plaintext: the demo cluster (2 workers) with
# `access_log = true` and with `access_log = false`, both logging to a file
# (server.log_file) through the master, in the same run.
#
# Usage: bench/access-log.sh [ROUNDS] [DURATION]   (default 5 rounds of 10s)
# Needs wrk (Debian: apt-get install wrk) and taskset; PIN: see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh "$@"
# The access log is at info level (target `access`).
export RINGMASTER_LOG=info

start_cluster off reuseport "$(printf 'access_log = false\n[server]\nlog_file = "%s/off.log"\n' "$work")"
start_cluster on reuseport "$(printf 'access_log = true\n[server]\nlog_file = "%s/on.log"\n' "$work")"
for s in off on; do wait_up $s /plaintext; done
measure "$rounds" "$duration" "plaintext" "off on"
echo
echo "access log lines written: $(wc -l < "$work/on.log") (file $(du -h "$work/on.log" | cut -f1))"
