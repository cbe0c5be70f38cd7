//! Property tests of the wire format: every message survives a round trip
//! through a frame, however the byte stream is cut into reads, and no input
//! (arbitrary bytes, cut anywhere) makes decoding panic. The cargo-fuzz
//! targets in `fuzz/` explore the same functions for longer.

use proptest::prelude::*;
use ringmaster_proto::{
    Answer, BootPhase, ClusterStatus, GroupStatus, IpcStats, MasterMsg, MetricKind, Origin,
    ReplyError, Service, Target, WorkerInfo, WorkerMsg, decode_frame, encode_frame,
};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..256)
}

fn origin() -> impl Strategy<Value = Origin> {
    (text(), any::<u32>(), any::<u32>()).prop_map(|(group, slot, pid)| Origin { group, slot, pid })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::All),
        text().prop_map(Target::Group),
        (text(), any::<u32>()).prop_map(|(group, slot)| Target::Slot { group, slot }),
    ]
}

fn worker_msg() -> impl Strategy<Value = WorkerMsg> {
    prop_oneof![
        (any::<u16>(), any::<u32>()).prop_map(|(version, pid)| WorkerMsg::Hello { version, pid }),
        proptest::collection::vec((text(), any::<u64>()), 0..6).prop_map(|p| WorkerMsg::Ready {
            phases: p
                .into_iter()
                .map(|(name, micros)| BootPhase { name, micros })
                .collect()
        }),
        Just(WorkerMsg::Heartbeat),
        text().prop_map(|reason| WorkerMsg::Fatal { reason }),
        text().prop_map(|topic| WorkerMsg::Subscribe { topic }),
        text().prop_map(|topic| WorkerMsg::Serve { topic }),
        (target(), text(), bytes()).prop_map(|(to, topic, payload)| WorkerMsg::Publish {
            to,
            topic,
            payload
        }),
        (any::<u64>(), text(), text(), any::<u64>(), bytes()).prop_map(
            |(id, group, topic, timeout_ms, payload)| WorkerMsg::Request {
                id,
                group,
                topic,
                timeout_ms,
                payload
            }
        ),
        (
            any::<u64>(),
            prop_oneof![bytes().prop_map(Ok), text().prop_map(Err)]
        )
            .prop_map(|(id, result)| WorkerMsg::Reply { id, result }),
        (
            any::<u64>(),
            prop_oneof![Just(Service::Status), Just(Service::Workers)]
        )
            .prop_map(|(id, service)| WorkerMsg::Call { id, service }),
        (
            any::<u64>(),
            text(),
            text(),
            prop_oneof![
                Just(MetricKind::Counter),
                Just(MetricKind::Gauge),
                Just(MetricKind::Histogram)
            ],
            proptest::collection::vec((text(), text()), 0..4),
            proptest::collection::vec(-1e9f64..1e9, 0..8),
        )
            .prop_map(
                |(id, name, help, kind, labels, buckets)| WorkerMsg::Register {
                    id,
                    name,
                    help,
                    kind,
                    labels,
                    buckets
                }
            ),
    ]
}

fn reply_error() -> impl Strategy<Value = ReplyError> {
    prop_oneof![
        proptest::option::of(origin()).prop_map(|server| ReplyError::Timeout { server }),
        origin().prop_map(|server| ReplyError::ServerExited { server }),
        (origin(), text()).prop_map(|(server, message)| ReplyError::Failed { server, message }),
        any::<u64>().prop_map(|limit| ReplyError::Overloaded { limit }),
        origin().prop_map(|server| ReplyError::Dropped { server }),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    let stats = (any::<[u64; 5]>()).prop_map(|c| IpcStats {
        received: c[0],
        routed: c[1],
        dropped: c[2],
        pending_requests: c[3],
        failed_requests: c[4],
    });
    let group =
        (text(), text(), any::<u32>(), any::<u32>()).prop_map(|(name, listen, count, ready)| {
            GroupStatus {
                name,
                listen,
                count,
                ready,
            }
        });
    let worker = (
        text(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        text(),
        any::<u64>(),
    )
        .prop_map(
            |(group, slot, generation, pid, phase, uptime_ms)| WorkerInfo {
                group,
                slot,
                generation,
                pid,
                phase,
                uptime_ms,
            },
        );
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(group, 0..4),
            stats
        )
            .prop_map(|(master_pid, uptime_ms, groups, ipc)| Answer::Status(
                ClusterStatus {
                    master_pid,
                    uptime_ms,
                    groups,
                    ipc
                }
            )),
        proptest::collection::vec(worker, 0..4).prop_map(Answer::Workers),
    ]
}

fn master_msg() -> impl Strategy<Value = MasterMsg> {
    prop_oneof![
        any::<u64>().prop_map(|grace_ms| MasterMsg::Drain { grace_ms }),
        (text(), origin(), bytes()).prop_map(|(topic, from, payload)| MasterMsg::Deliver {
            topic,
            from,
            payload
        }),
        (any::<u64>(), origin(), text(), bytes()).prop_map(|(id, from, topic, payload)| {
            MasterMsg::Request {
                id,
                from,
                topic,
                payload,
            }
        }),
        (
            any::<u64>(),
            prop_oneof![bytes().prop_map(Ok), reply_error().prop_map(Err)]
        )
            .prop_map(|(id, result)| MasterMsg::Reply { id, result }),
        (any::<u64>(), answer()).prop_map(|(id, answer)| MasterMsg::Answer { id, answer }),
        (
            any::<u64>(),
            prop_oneof![any::<u32>().prop_map(Ok), text().prop_map(Err)]
        )
            .prop_map(|(id, result)| MasterMsg::Registered { id, result }),
    ]
}

/// Every complete frame in `buf`, decoded.
fn decode_frames<T: serde::de::DeserializeOwned>(
    buf: &mut bytes::BytesMut,
) -> Result<Vec<T>, ringmaster_proto::FrameError> {
    let mut out = Vec::new();
    while let Some(msg) = decode_frame(buf)? {
        out.push(msg);
    }
    Ok(out)
}

/// Feeds `stream` to [`decode_frames`] in pieces cut at `cuts`.
fn decode_in_pieces<T: serde::de::DeserializeOwned>(
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<T>, ringmaster_proto::FrameError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        buf.extend_from_slice(&stream[at..p]);
        at = p;
        out.extend(decode_frames::<T>(&mut buf)?);
    }
    assert!(buf.is_empty(), "whole frames leave nothing behind");
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn worker_messages_round_trip(msgs in proptest::collection::vec(worker_msg(), 1..8),
                                  cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut stream).unwrap();
        }
        let back: Vec<WorkerMsg> = decode_in_pieces(&stream, &cuts).unwrap();
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn master_messages_round_trip(msgs in proptest::collection::vec(master_msg(), 1..8),
                                  cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut stream).unwrap();
        }
        let back: Vec<MasterMsg> = decode_in_pieces(&stream, &cuts).unwrap();
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..512),
                                   cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut buf = bytes::BytesMut::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        let mut at = 0;
        for p in points {
            buf.extend_from_slice(&stream[at..p]);
            at = p;
            if decode_frames::<WorkerMsg>(&mut buf).is_err() {
                break;
            }
        }
        let _ = postcard::from_bytes::<WorkerMsg>(&stream);
        let _ = postcard::from_bytes::<MasterMsg>(&stream);
    }

    #[test]
    fn framed_arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut stream = (payload.len() as u32).to_be_bytes().to_vec();
        stream.extend_from_slice(&payload);
        let mut buf = bytes::BytesMut::from(&stream[..]);
        let _ = decode_frames::<MasterMsg>(&mut buf);
        let mut buf = bytes::BytesMut::from(&stream[..]);
        let _ = decode_frames::<WorkerMsg>(&mut buf);
    }
}
