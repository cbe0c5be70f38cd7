#!/usr/bin/env bash
# Instructions per request (callgrind counts instructions, not time, so the
# figure is the same on a busy machine): one demo worker (1 thread) and the
# single-process baselines, each sent N sequential keep-alive requests
# after a warm-up, counted in the serving process only.
#
#   bash bench/instructions.sh [ROUTE] [N]      (default plaintext, 3000)
#
# Needs valgrind (Debian: apt-get install valgrind). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
route=${1:-plaintext}
n=${2:-3000}
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
cargo build --release -q -p ringmaster-demo -p ringmaster-bench
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
requests() { # PORT COUNT
  python3 - "$1" "$2" "$route" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    # What wrk sends: a Host header and nothing else (http.client would
    # add Accept-Encoding: identity).
    c.putrequest("GET", "/" + sys.argv[3], skip_accept_encoding=True)
    c.endheaders()
    c.getresponse().read()
PY
}
wait_up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/plaintext" >/dev/null 2>&1 && return; sleep 0.2; done; echo "no answer on $1" >&2; exit 1; }
count() { # NAME PORT PID: zero, send N, dump, print Ir per request
  requests "$2" 300
  callgrind_control --zero "$3" >/dev/null 2>&1
  requests "$2" "$n"
  callgrind_control --dump "$3" >/dev/null 2>&1
  sleep 1
  local f ir
  f=$(ls -t "$work"/cg."$3"* | head -1)
  ir=$(awk '/^summary:/ {print $2; exit}' "$f")
  echo "$1 /$route: $((ir / n)) instructions per request"
}
for mode in --bare --tower-http --no-metrics; do
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" target/release/baseline "127.0.0.1:$port" "$mode" >/dev/null 2>&1 &
  pid=$!
  wait_up "$port"
  count "baseline $mode" "$port" "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
port=$(free_port)
mkdir -p "$work/rm"
printf '[groups.web]\nlisten = "127.0.0.1:%s"\ncount = 1\nthreads = 1\nboot_timeout = "120s"\nheartbeat_timeout = "60s"\n' "$port" > "$work/rm/ringmaster.toml"
(cd "$work/rm" && RINGMASTER_LOG=warn exec valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$work/cg.%p" "$OLDPWD/target/release/ringmaster-demo" serve --config ringmaster.toml) >/dev/null 2>&1 &
master=$!
wait_up "$port"
worker=$(curl -s "http://127.0.0.1:$port/healthz" | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
count "ringmaster worker" "$port" "$worker"
kill "$master"; wait "$master" 2>/dev/null || true
