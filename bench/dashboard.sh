#!/usr/bin/env bash
# The cost of an open dashboard: the demo's web group (2 workers) with the
# admin worker on, /plaintext req/s with one dashboard connected (its
# Server-Sent Events stream, one update a second) against none, in
# alternating rounds of the same run on the same cluster.
#
# Usage: bench/dashboard.sh [ROUNDS] [DURATION]    (default 5 rounds of 10s)
# Needs wrk and curl; PIN: see bench/lib.sh (the stream's client runs on
# the load generator's CPU, as a browser would run elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh "$@"

admin=$(free_port)
start_cluster web reuseport "$(printf '[admin]\nlisten = "127.0.0.1:%s"' "$admin")"
wait_up web /plaintext
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null && break; sleep 0.1; done

declare -A runs
ratios=""
one() { # STATE ROUND
  local sse="" rps
  if [ "$1" = open ]; then
    $gen curl -sN "http://127.0.0.1:$admin/events" > "$work/events.$2" &
    sse=$!
    sleep 1
  fi
  rps=$($gen wrk -t1 -c64 -d"$duration" "http://127.0.0.1:${port[web]}/plaintext" | awk '/Requests\/sec/ {print $2}')
  if [ -n "$sse" ]; then
    kill "$sse"; wait "$sse" 2>/dev/null || true
    ticks=$(grep -c '^event: tick' "$work/events.$2" || true)
    [ "$ticks" -gt 0 ] || { echo "the dashboard stream sent nothing" >&2; exit 1; }
    echo "round $2 dashboard $1: $rps req/s ($ticks updates received)"
  else
    echo "round $2 dashboard $1: $rps req/s"
  fi
  runs[$1]+="$rps "
}
for round in $(seq "$rounds"); do
  # Alternate the order, so neither state always runs first.
  if [ $((round % 2)) = 1 ]; then one closed "$round"; one open "$round"; else one open "$round"; one closed "$round"; fi
  # The pair's ratio: rounds drift on a noisy machine, a pair much less.
  ratios+="$(echo "${runs[open]}" | awk '{print $NF}') $(echo "${runs[closed]}" | awk '{print $NF}')"$'\n'
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
closed=$(echo "${runs[closed]}" | median)
open=$(echo "${runs[open]}" | median)
echo
echo "median of $rounds runs, wrk -t1 -c64 -d$duration /plaintext, PIN=${PIN:-1}:"
awk -v c="$closed" -v o="$open" 'BEGIN { printf "  dashboard closed %10.0f req/s\n  dashboard open   %10.0f req/s  %.3fx (%+.1f%%)\n", c, o, o / c, (o / c - 1) * 100 }'
pair=$(echo "$ratios" | awk 'NF == 2 { print $1 / $2 }' | median)
awk -v r="$pair" 'BEGIN { printf "  median of the rounds'"'"' open/closed ratios: %.3fx (%+.1f%%)\n", r, (r - 1) * 100 }'
