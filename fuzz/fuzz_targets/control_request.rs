//! Fuzzes the control socket's request reading: the input, after its first
//! byte (the size of each read), is what a client sends; every line is
//! parsed as a request. Nothing may panic; every refusal is a final error
//! line with a code and a message (`ringmaster_master::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((step, rest)) = data.split_first() {
        ringmaster_master::fuzzing::control_request(rest, usize::from(*step));
    }
});
