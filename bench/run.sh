#!/usr/bin/env bash
# ringmaster beside its peers, in one command (issue 14):
#
#   bash bench/run.sh [DURATION] [ROUNDS]      (default 4s, 3 rounds)
#
# Builds in release mode, then starts on loopback, in turn within each
# round, the same routes on:
# - ringmaster: the demo cluster with its defaults (2 workers of `web`);
# - bare: one axum process, no middleware (the limit on this machine);
# - tower-http: one axum process with the tower-http layers a user adds by
#   hand for the same features (trace, request id, gzip, catch-panic,
#   timeout);
# - node: Node's cluster with 2 Express workers (bench/peers/node-cluster,
#   pinned by its package-lock.json, installed with `npm ci`), /counter a
#   round trip to the primary per request.
# Each is driven with `wrk -t1 -c64 --latency` on /plaintext, /json,
# /counter and /db (SQLite; ringmaster and node only), unpinned (what users
# run) and pinned (servers on CPU 0, wrk on CPU 1). Also in the same run:
# memory of each process tree (RSS and the processes' own memory, from
# /proc/PID/smaps_rollup) idle and after the load, restart latency after
# kill -9 (medians of 20) and failed requests across a rolling reload (HUP)
# for ringmaster and node.
#
# Writes docs/bench/run.json, docs/bench/throughput.svg and the generated
# section of docs/performance.md (bench/report.py). Installs wrk (apt-get)
# and the Node dependencies itself when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-4s}
rounds=${2:-3}
root=$PWD

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v wrk >/dev/null; then
  $sudo_cmd apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q wrk
fi
command -v node >/dev/null || { echo "node not found: apt-get install nodejs npm" >&2; exit 1; }
(cd bench/peers/node-cluster && { [ -d node_modules/better-sqlite3/build ] || npm ci --no-audit --no-fund; })
cargo build --release -q -p ringmaster-demo -p ringmaster-bench

work=$(mktemp -d)
pids=()
cleanup() {
  exec 2>/dev/null
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; pkill -9 -P "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A port pid
demo=$root/target/release/ringmaster-demo

# ringmaster: the demo's defaults, web only (2 workers), its own SQLite
# file; `min_uptime = "50ms"` so that the restart rounds (200 ms apart)
# measure a restart, not the crash-loop backoff (it changes nothing else).
port[ringmaster]=$(free_port)
mkdir -p "$work/rm"
printf '[groups.web]\nlisten = "127.0.0.1:%s"\ncount = 2\nmin_uptime = "50ms"\n[backends.main]\nurl = "sqlite://%s/main.db"\n' \
  "${port[ringmaster]}" "$work/rm" > "$work/rm/ringmaster.toml"
(cd "$work/rm" && RINGMASTER_LOG=warn exec "$demo" serve --config ringmaster.toml) > "$work/rm.log" 2>&1 &
pid[ringmaster]=$!; pids+=($!)

port[bare]=$(free_port)
target/release/baseline "127.0.0.1:${port[bare]}" --bare 2>/dev/null &
pid[bare]=$!; pids+=($!)
port[tower-http]=$(free_port)
target/release/baseline "127.0.0.1:${port[tower-http]}" --tower-http 2>/dev/null &
pid[tower-http]=$!; pids+=($!)

# node: the same `world` table, made by the demo's migrations.
mkdir -p "$work/node"
printf '[backends.main]\nurl = "sqlite://%s/main.db"\n' "$work/node" > "$work/node/ringmaster.toml"
(cd "$work/node" && RINGMASTER_LOG=warn "$demo" migrate --config ringmaster.toml) >/dev/null
port[node]=$(free_port)
(cd bench/peers/node-cluster && PORT=${port[node]} WORKERS=2 DB="$work/node/main.db" exec node server.js) > "$work/node.log" 2>&1 &
pid[node]=$!; pids+=($!)

servers="ringmaster bare tower-http node"
wait_up() {
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:${port[$1]}/plaintext" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server $1 did not answer" >&2; cat "$work"/*.log >&2; exit 1
}
for s in $servers; do wait_up "$s"; done
sleep 1

tree() { # PID: the pid and its descendants
  local p=$1; echo "$p"
  for c in $(pgrep -P "$p" || true); do tree "$c"; done
}
pin() { # SERVER CPUS: every thread of the process tree
  for p in $(tree "${pid[$1]}"); do taskset -a -p -c "$2" "$p" >/dev/null 2>&1 || true; done
}
memory() { # SERVER: "rss_kib own_kib" of the process tree
  local rss=0 own=0 r o
  for p in $(tree "${pid[$1]}"); do
    r=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    o=$(awk '/^Private_(Clean|Dirty):/ {s+=$2} END {print s+0}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    rss=$((rss + ${r:-0})); own=$((own + ${o:-0}))
  done
  echo "$rss $own"
}

# Each process of ringmaster's tree: the master and each worker, its own
# memory split into clean (pages of the binary only it has touched, which
# the kernel can drop and read again) and dirty (heap, stacks, relocated
# data). After `sync`: pages of a binary just built are dirty in the page
# cache until written back, and would count as dirty here.
process_memory() { # SERVER WHEN
  local p name
  for p in $(tree "${pid[$1]}"); do
    name=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | awk '{print ($2 == "worker") ? "worker " $3 : "master"}')
    awk -v s="$1" -v w="$2" -v n="$name" '/^Rss:/ {r=$2} /^Private_Clean:/ {c=$2} /^Private_Dirty:/ {d=$2}
      END {printf "{\"kind\":\"process\",\"server\":\"%s\",\"when\":\"%s\",\"process\":\"%s\",\"rss_kib\":%d,\"clean_kib\":%d,\"dirty_kib\":%d}\n", s, w, n, r, c, d}' \
      "/proc/$p/smaps_rollup" 2>/dev/null || true
  done
}

results=$work/results.jsonl
sync
process_memory ringmaster idle >> "$results"
for s in $servers; do
  read -r rss own < <(memory "$s")
  echo "{\"kind\":\"memory\",\"when\":\"idle\",\"server\":\"$s\",\"rss_kib\":$rss,\"own_kib\":$own,\"processes\":$(tree "${pid[$s]}" | wc -l)}" >> "$results"
done

routes="plaintext json counter db"
serves() { # SERVER ROUTE
  [ "$2" != db ] || [ "$1" = ringmaster ] || [ "$1" = node ]
}
for pinned in 0 1; do
  if [ "$pinned" = 1 ]; then gen="taskset -c 1"; cpus=0; else gen=""; cpus=0,1; fi
  for s in $servers; do pin "$s" "$cpus"; done
  for round in $(seq "$rounds"); do
    for route in $routes; do
      for s in $servers; do
        serves "$s" "$route" || continue
        out=$($gen wrk -t1 -c64 -d"$duration" --latency "http://127.0.0.1:${port[$s]}/$route")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")
        echo "pinned=$pinned round $round /$route $s: $rps req/s, p50 $p50, p99 $p99, errors $errors"
        echo "{\"kind\":\"http\",\"pinned\":$pinned,\"round\":$round,\"route\":\"$route\",\"server\":\"$s\",\"rps\":$rps,\"p50\":\"$p50\",\"p99\":\"$p99\",\"errors\":$errors}" >> "$results"
      done
    done
  done
done
process_memory ringmaster "after load" >> "$results"
for s in $servers; do
  pin "$s" 0,1
  read -r rss own < <(memory "$s")
  echo "{\"kind\":\"memory\",\"when\":\"after load\",\"server\":\"$s\",\"rss_kib\":$rss,\"own_kib\":$own,\"processes\":$(tree "${pid[$s]}" | wc -l)}" >> "$results"
done

# Restart latency (kill -9 of a worker until another pid answers /healthz)
# and a rolling reload (HUP) under load, ringmaster and node.
for s in ringmaster node; do
  python3 bench/peers/restart.py "${port[$s]}" 20 | sed "s/^/{\"kind\":\"restart\",\"server\":\"$s\",/" >> "$results"
  out=$( (sleep 2; kill -HUP "${pid[$s]}") & wrk -t1 -c16 -d10s "http://127.0.0.1:${port[$s]}/plaintext")
  errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "reload under load, $s: $errors failed of $total"
  echo "{\"kind\":\"reload\",\"server\":\"$s\",\"failed\":$errors,\"requests\":$total}" >> "$results"
  sleep 3
done

python3 bench/report.py "$results" "$duration" "$rounds"
