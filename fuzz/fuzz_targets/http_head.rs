//! Fuzzes HTTP requests through the worker's own connection loop (hyper
//! with the group's limits, the checks before the app, the common
//! middleware): the input, after its first byte (the size of each write),
//! is what a client sends. Nothing may panic or hang; every answer starts
//! with a status line (`ringmaster_worker::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((step, rest)) = data.split_first() {
        ringmaster_worker::fuzzing::http_head(rest, usize::from(*step));
    }
});
