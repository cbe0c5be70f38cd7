#!/usr/bin/env bash
# HTTP throughput on /plaintext and /json: the demo cluster (2 workers,
# each listener mode) against a single-process axum server with the same
# handlers and the same common middleware with its built-in metrics
# ("baseline"), without the metrics ("nometrics"), and without the
# middleware ("bare"), with the same load generator in the same run.
#
# Usage: bench/http.sh [ROUNDS] [DURATION]      (default 5 rounds of 10s)
# Needs wrk (Debian: apt-get install wrk) and taskset; PIN: see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh "$@"

start_baseline baseline
start_baseline nometrics --no-metrics
start_baseline bare --bare
start_cluster reuseport reuseport
start_cluster shared shared
for s in baseline nometrics bare reuseport shared; do wait_up $s /plaintext; done
measure "$rounds" "$duration" "plaintext json" "baseline nometrics bare reuseport shared"
