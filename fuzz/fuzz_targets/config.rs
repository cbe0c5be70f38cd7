//! Fuzzes the configuration: a file, then after a NUL byte one
//! `KEY=VALUE` environment override per line. Nothing may panic; an error
//! names the file or the variable; what is accepted survives the handoff to
//! the workers unchanged (`ringmaster_config::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmaster_config::fuzzing::config(data);
});
