#!/usr/bin/env bash
# What the driver features save: a minimal app (one route) built in release
# mode from clean, once per feature set, each in a target directory of its
# own; prints the wall time and the binary's size.
#
#   bash bench/features.sh            # all, sqlite (the default), postgres only
#   bash bench/features.sh postgres   # only the sets named
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=("sqlite,postgres,redis" "sqlite" "postgres")
work="$(mktemp -d /tmp/ringmaster-features.XXXXXX)"
trap 'rm -rf "$work"' EXIT
printf '%-24s %10s %12s\n' "features" "build (s)" "binary (KiB)"
for set in "${sets[@]}"; do
    app="$work/app-${set//,/-}"
    mkdir -p "$app/src"
    cat > "$app/Cargo.toml" <<TOML
[package]
name = "features-app"
version = "0.0.0"
edition = "2024"

[dependencies]
ringmaster = { path = "$root/crates/ringmaster", default-features = false, features = [$(printf '"%s",' ${set//,/ } | sed 's/,$//')] }

[workspace]
TOML
    cat > "$app/src/main.rs" <<'RS'
use ringmaster::prelude::*;

struct Hello;
impl Module for Hello {
    fn routes(&self) -> Controller {
        Controller::new("/").get("/", || async { "Hello, World!" })
    }
}

fn main() -> std::process::ExitCode {
    Cluster::new().worker(Worker::new("web").module(Hello)).run()
}
RS
    cp "$root/Cargo.lock" "$app/Cargo.lock"
    start=$(date +%s.%N)
    (cd "$app" && cargo build -q --release --offline)
    end=$(date +%s.%N)
    size=$(stat -c %s "$app/target/release/features-app")
    printf '%-24s %10.1f %12d\n' "$set" "$(echo "$end - $start" | bc)" "$((size / 1024))"
done
