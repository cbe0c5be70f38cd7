//! The demo cluster: `cargo run --release -- serve`.

use ringmaster::prelude::*;

fn main() -> std::process::ExitCode {
    Cluster::new()
        .version(env!("CARGO_PKG_VERSION"))
        .worker(ringmaster_demo::web())
        .worker(ringmaster_demo::api())
        .run()
}
