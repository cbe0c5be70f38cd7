//! Fuzzes the IPC wire format as the master and the worker read it: the
//! input is a byte stream, cut into reads at points taken from its first
//! byte, decoded frame by frame as worker messages and as master messages.
//! Nothing may panic; whatever decodes must encode to bytes that decode
//! to the same encoding.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmaster_proto::{MasterMsg, WorkerMsg, decode_frame, encode_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn stream<T: DeserializeOwned + Serialize>(data: &[u8], step: usize) {
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decode_frame::<T>(&mut buf) {
                Ok(Some(msg)) => {
                    // A decoded message re-encodes, and that decodes to a
                    // message with the same encoding (bytes, not values:
                    // a NaN bucket bound is not equal to itself).
                    let mut out = Vec::new();
                    encode_frame(&msg, &mut out).expect("a decoded message encodes");
                    let mut again = BytesMut::from(&out[..]);
                    let back = decode_frame::<T>(&mut again).expect("re-decodes").expect("whole");
                    let mut out2 = Vec::new();
                    encode_frame(&back, &mut out2).expect("encodes again");
                    assert_eq!(out, out2);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (step, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    stream::<WorkerMsg>(rest, step);
    stream::<MasterMsg>(rest, step);
    let _ = postcard::from_bytes::<WorkerMsg>(rest);
    let _ = postcard::from_bytes::<MasterMsg>(rest);
});
