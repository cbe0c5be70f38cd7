# Shared by bench/http.sh and bench/db.sh: build, start servers, run wrk in
# rounds, print medians and ratios to the first server. Source it from the
# repository root with the script's arguments: [ROUNDS] [DURATION].
#
# PIN=1 (default): servers on CPU 0, wrk on CPU 1. On a 2-core machine the
# load generator would otherwise take half the CPU the servers compete for,
# and the figures then measure the scheduler more than the servers.
# PIN=0: everything shares every CPU (noisier).

rounds=${1:-5}
duration=${2:-10s}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p ringmaster-demo -p ringmaster-bench
work=$(mktemp -d)
if [ "${PIN:-1}" = 1 ]; then srv="taskset -c 0"; gen="taskset -c 1"; else srv=""; gen=""; fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
declare -A port results

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_cluster NAME MODE [EXTRA_TOML]: the demo's web group, 2 workers.
start_cluster() {
  port[$1]=$(free_port)
  # A directory each: its own control socket, pid file and database.
  mkdir -p "$work/$1"
  printf '[groups.web]\nlisten = "127.0.0.1:%s"\ncount = 2\nlisten_mode = "%s"\n%s\n' \
    "${port[$1]}" "$2" "${3:-}" > "$work/$1/ringmaster.toml"
  (cd "$work/$1" && RINGMASTER_LOG=${RINGMASTER_LOG:-warn} exec $srv "$OLDPWD/target/release/ringmaster-demo" serve --config "$work/$1/ringmaster.toml") &
  pids+=($!)
}

# start_baseline NAME [ARGS...]: the single-process server.
start_baseline() {
  local name=$1; shift
  port[$name]=$(free_port)
  $srv target/release/baseline "127.0.0.1:${port[$name]}" "$@" 2>/dev/null &
  pids+=($!)
}

wait_up() { # NAME PATH
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:${port[$1]}$2" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server $1 did not answer $2" >&2; exit 1
}

# measure ROUNDS DURATION "ROUTES" "SERVERS": servers in turn within each round.
measure() {
  local rounds=$1 duration=$2 routes=$3 servers=$4
  for round in $(seq "$rounds"); do
    for route in $routes; do
      for s in $servers; do
        rps=$($gen wrk -t1 -c64 -d"$duration" "http://127.0.0.1:${port[$s]}/$route" | awk '/Requests\/sec/ {print $2}')
        echo "round $round /$route $s: $rps req/s"
        results[$route.$s]+="$rps "
      done
    done
  done
  median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  echo
  echo "median of $rounds runs, wrk -t1 -c64 -d$duration, PIN=${PIN:-1}; ratio to the first server:"
  for route in $routes; do
    local first="" base=""
    for s in $servers; do
      m=$(echo "${results[$route.$s]}" | median)
      [ -z "$first" ] && { first=$s; base=$m; }
      awk -v r="$route" -v s="$s" -v m="$m" -v b="$base" 'BEGIN { printf "  /%-9s %-10s %10.0f req/s  %.3fx\n", r, s, m, m / b }'
    done
  done
}
