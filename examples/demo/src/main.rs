//! The demo cluster: `cargo run --release -- serve`.

use ringmaster::prelude::*;

fn main() -> std::process::ExitCode {
    Cluster::new()
        .worker(ringmaster_demo::web())
        .worker(ringmaster_demo::api())
        .run()
}
