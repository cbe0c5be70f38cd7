//! The demo as a "next release": the same application with another
//! version string, which the upgrade test swaps onto the disk to check
//! that `status` reports the binary that took over.

use ringmaster::prelude::*;

fn main() -> std::process::ExitCode {
    Cluster::new()
        .version(concat!(env!("CARGO_PKG_VERSION"), "-next"))
        .worker(ringmaster_demo::web())
        .worker(ringmaster_demo::api())
        .run()
}
