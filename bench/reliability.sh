#!/usr/bin/env bash
# The reliability suite's long versions (issue 11), on demand: the chaos
# tests of examples/demo/tests/chaos.rs (kills under load on /counter, a
# restart storm, an outage of a PostgreSQL of their own) with each storm
# lasting SECS seconds, then the flood and outage tests of reliability.rs,
# all in release mode, one at a time, with what they measured printed.
#
#   bash bench/reliability.sh [SECS]       # default 120
#
# RINGMASTER_CHAOS_SEED=N replays the chaos test's kills (its seed is
# printed). Needs root (the PostgreSQL test runs initdb as `postgres`; the
# disk tests mount tmpfs) and PostgreSQL's server binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
export RINGMASTER_CHAOS_SECS=$secs
cargo test --release -p ringmaster-demo --test chaos -- --nocapture --test-threads=1 2>&1 |
  grep -E "(chaos|storm): |outage of|test result|panicked|seed"
cargo test --release -p ringmaster-demo --test floods --test reliability -- --nocapture --test-threads=1 \
  floods backend_outage paused_master 2>&1 |
  grep -E "normal client|test result|panicked"
