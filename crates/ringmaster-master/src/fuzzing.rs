//! Entry points for the fuzz targets in `fuzz/` and for their proptest
//! versions in the test suite: the master's readers of untrusted input,
//! reached as the control socket reaches them. Not a stable API.

/// Reads `bytes` from a control connection in reads of `step` bytes and
/// parses every request line; panics on a broken invariant (a refusal
/// that is not a final error line with a code and a message, a line
/// reader that exceeds its bound).
///
/// ```
/// ringmaster_master::fuzzing::control_request(b"{\"v\":1,\"cmd\":\"status\"}\n{\"v\":9}\n", 3);
/// ```
pub fn control_request(bytes: &[u8], step: usize) {
    crate::control::fuzz_request_lines(bytes, step);
}
