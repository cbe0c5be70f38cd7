#!/usr/bin/env bash
# HTTP throughput: the demo cluster (2 workers, each listener mode) against
# a single-process axum server with the same handlers (bench/src/bin/baseline.rs),
# with the same load generator in the same run. Prints each run and the
# median req/s of each server and route, and the ratio to the baseline.
#
# Usage: bench/http.sh [ROUNDS] [DURATION]      (default 5 rounds of 10s)
# Needs wrk (Debian: apt-get install wrk) and taskset (util-linux).
#
# PIN=1 (default): every server on CPU 0, wrk on CPU 1. On a 2-core machine
# the load generator would otherwise take half the CPU the servers compete
# for, and the figures then measure the scheduler more than the servers.
# PIN=0: everything shares every CPU (noisier; reported too).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
duration=${2:-10s}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
if [ "${PIN:-1}" = 1 ]; then srv="taskset -c 0"; gen="taskset -c 1"; else srv=""; gen=""; fi
cargo build --release -q -p ringmaster-demo -p ringmaster-bench
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_cluster() { # mode port
  printf '[groups.web]\nlisten = "127.0.0.1:%s"\ncount = 2\nlisten_mode = "%s"\n' "$2" "$1" > "$work/$1.toml"
  RINGMASTER_LOG=warn $srv target/release/ringmaster-demo serve --config "$work/$1.toml" &
  pids+=($!)
}
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/plaintext" >/dev/null 2>&1 && return; sleep 0.1; done; echo "server on $1 did not start" >&2; exit 1; }

declare -A port
port[baseline]=$(free_port); $srv target/release/baseline "127.0.0.1:${port[baseline]}" 2>/dev/null & pids+=($!)
port[reuseport]=$(free_port); start_cluster reuseport "${port[reuseport]}"
port[shared]=$(free_port); start_cluster shared "${port[shared]}"
for s in baseline reuseport shared; do wait_up "${port[$s]}"; done

declare -A results
for round in $(seq "$rounds"); do
  for route in plaintext json; do
    for s in baseline reuseport shared; do
      rps=$($gen wrk -t1 -c64 -d"$duration" "http://127.0.0.1:${port[$s]}/$route" | awk '/Requests\/sec/ {print $2}')
      echo "round $round $route $s: $rps req/s"
      results[$route.$s]+="$rps "
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median of $rounds runs, wrk -t1 -c64 -d$duration, PIN=${PIN:-1}:"
for route in plaintext json; do
  base=$(echo "${results[$route.baseline]}" | median)
  for s in baseline reuseport shared; do
    m=$(echo "${results[$route.$s]}" | median)
    awk -v r="$route" -v s="$s" -v m="$m" -v b="$base" 'BEGIN { printf "  /%-9s %-9s %10.0f req/s  %.3fx\n", r, s, m, m / b }'
  done
done
