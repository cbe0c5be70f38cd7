//! Length-prefixed frames.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload.
//! A length above [`MAX_FRAME_LEN`] is an error for that channel: the reader
//! never allocates for it.

use bytes::{Buf, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest payload a frame may carry (1 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Size of the length prefix.
pub(crate) const HEADER_LEN: usize = 4;

/// A frame that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame of {len} bytes exceeds the maximum of {MAX_FRAME_LEN} bytes")]
    TooLarge {
        /// The announced payload length.
        len: usize,
    },
    /// The payload is not a valid message.
    #[error("undecodable message: {0}")]
    Decode(#[source] postcard::Error),
    /// The message could not be encoded.
    #[error("unencodable message: {0}")]
    Encode(#[source] postcard::Error),
}

/// Encodes `msg` as one frame (length prefix and payload) appended to `out`.
///
/// ```
/// use ringmaster_proto::{encode_frame, WorkerMsg};
/// let mut out = Vec::new();
/// encode_frame(&WorkerMsg::Heartbeat, &mut out).unwrap();
/// assert_eq!(&out[..4], &[0, 0, 0, 1]);
/// ```
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = postcard::to_extend(msg, Append(out)) {
        out.truncate(start);
        return Err(FrameError::Encode(e));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge { len });
    }
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge { len })?;
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends to a borrowed buffer, so a failed encoding can be undone.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Takes one complete frame's payload off the front of `buf`, if there is one.
///
/// Returns `Ok(None)` when more bytes are needed. Rejects an oversized length
/// as soon as its prefix is seen.
pub(crate) fn take_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    Ok(Some(buf.split_to(len)))
}

/// Decodes the next complete frame at the front of `buf` as a `T`.
///
/// Returns `Ok(None)` when `buf` holds no complete frame yet (bytes are
/// kept for the next call), and an error for an oversized length prefix
/// (seen before the payload arrives) or a payload that is not a `T`. It
/// never panics, whatever the bytes.
///
/// ```
/// use bytes::BytesMut;
/// use ringmaster_proto::{decode_frame, encode_frame, WorkerMsg};
/// let mut out = Vec::new();
/// encode_frame(&WorkerMsg::Heartbeat, &mut out).unwrap();
/// let mut buf = BytesMut::from(&out[..]);
/// assert_eq!(decode_frame::<WorkerMsg>(&mut buf).unwrap(), Some(WorkerMsg::Heartbeat));
/// assert_eq!(decode_frame::<WorkerMsg>(&mut buf).unwrap(), None);
/// ```
pub fn decode_frame<T: DeserializeOwned>(buf: &mut BytesMut) -> Result<Option<T>, FrameError> {
    match take_frame(buf)? {
        Some(frame) => postcard::from_bytes(&frame)
            .map(Some)
            .map_err(FrameError::Decode),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MasterMsg, WorkerMsg};

    #[test]
    fn round_trip_through_take_frame() {
        let mut out = Vec::new();
        encode_frame(
            &WorkerMsg::Fatal {
                reason: "boom".into(),
            },
            &mut out,
        )
        .unwrap();
        encode_frame(&MasterMsg::Drain { grace_ms: 5 }, &mut out).unwrap();
        let mut buf = BytesMut::from(&out[..]);
        let a = take_frame(&mut buf).unwrap().unwrap();
        let b = take_frame(&mut buf).unwrap().unwrap();
        assert!(take_frame(&mut buf).unwrap().is_none());
        let a: WorkerMsg = postcard::from_bytes(&a).unwrap();
        let b: MasterMsg = postcard::from_bytes(&b).unwrap();
        assert_eq!(
            a,
            WorkerMsg::Fatal {
                reason: "boom".into()
            }
        );
        assert_eq!(b, MasterMsg::Drain { grace_ms: 5 });
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut out = Vec::new();
        encode_frame(&WorkerMsg::Heartbeat, &mut out).unwrap();
        let mut buf = BytesMut::from(&out[..out.len() - 1]);
        assert!(take_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&out[out.len() - 1..]);
        assert!(take_frame(&mut buf).unwrap().is_some());
    }

    #[test]
    fn oversized_length_is_rejected_from_the_prefix() {
        let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(
            take_frame(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic generator; the fuzz target covers the rest.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..2000 {
            let len = round % 64;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(x as u8);
            }
            let _ = postcard::from_bytes::<WorkerMsg>(&bytes);
            let _ = postcard::from_bytes::<MasterMsg>(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = take_frame(&mut buf) {}
        }
    }
}
