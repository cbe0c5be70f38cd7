#!/usr/bin/env bash
# The registry's cost on the request path: GET /counter (one increment of
# a cluster-wide counter, then a read of its cluster-wide total) against
# GET /plaintext, on the same demo cluster (2 workers), alternating within
# each round. Both routes also record the built-in HTTP metrics.
#
# Usage: bench/counter.sh [ROUNDS] [DURATION]   (default 5 rounds of 10s)
# Needs wrk (Debian: apt-get install wrk) and taskset; PIN: see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh "$@"

start_cluster cluster reuseport
wait_up cluster /plaintext
measure "$rounds" "$duration" "plaintext counter" "cluster"
p=$(echo "${results[plaintext.cluster]}" | median)
c=$(echo "${results[counter.cluster]}" | median)
awk -v p="$p" -v c="$c" 'BEGIN { printf "\n/counter against /plaintext on the same cluster: %.3fx\n", c / p }'
