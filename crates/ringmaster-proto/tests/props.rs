//! Property tests of the wire format: every message survives a round trip
//! through a frame, however the byte stream is cut into reads, and no input
//! (arbitrary bytes, cut anywhere) makes decoding panic. The cargo-fuzz
//! targets in `fuzz/` explore the same functions for longer.

use proptest::prelude::*;
use ringmaster_proto::{
    Answer, BootPhase, BootStep, BridgeStatus, ClusterStatus, ExitInfo, GroupStatus, IpcStats,
    LogLevel, LogLine, LogLines, MasterMsg, MetricKind, Origin, ReloadProgress, ReplyError,
    Service, Target, WorkerInfo, WorkerMsg, WorkerStatus, decode_frame, encode_frame,
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

/// Every boot step.
const STEPS: [BootStep; 7] = [
    BootStep::ConnectMaster,
    BootStep::LoadConfig,
    BootStep::ConnectBackends,
    BootStep::BuildApp,
    BootStep::MountControllers,
    BootStep::Configure,
    BootStep::Listen,
];

fn worker_msg() -> impl Strategy<Value = WorkerMsg> {
    prop_oneof![
        (any::<u16>(), any::<u32>()).prop_map(|(version, pid)| WorkerMsg::Hello { version, pid }),
        proptest::collection::vec((0..7usize, any::<u64>()), 0..6).prop_map(|p| WorkerMsg::Ready {
            phases: p
                .into_iter()
                .map(|(i, micros)| BootPhase {
                    step: STEPS[i],
                    micros
                })
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
            prop_oneof![
                Just(Service::Status),
                Just(Service::Workers),
                (any::<u64>(), any::<u32>()).prop_map(|(after, max)| Service::Logs { after, max })
            ]
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
        text().prop_map(|reason| WorkerMsg::Recycle { reason }),
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
    let exit = || {
        (
            any::<u32>(),
            text(),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i32>()),
            text(),
            any::<u64>(),
        )
            .prop_map(|(pid, status, code, signal, reason, at_ms)| ExitInfo {
                pid,
                status,
                code,
                signal,
                reason,
                at_ms,
            })
    };
    let counts = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
    );
    let figures = (
        proptest::option::of(any::<u64>()),
        -1e9f64..1e9,
        -1e9f64..1e9,
        proptest::option::of(-1e9f64..1e9),
        proptest::option::of(text()),
        proptest::option::of(any::<u64>()),
    );
    let worker_status = (
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        text(),
        counts,
        figures,
        proptest::option::of(exit()),
    )
        .prop_map(
            |(
                slot,
                pid,
                state,
                (generation, uptime_ms, restarts, rss_bytes, in_flight),
                f,
                last_exit,
            )| {
                let (
                    heartbeat_age_ms,
                    cpu_percent,
                    requests_per_sec,
                    p99_ms,
                    reason,
                    restart_in_ms,
                ) = f;
                WorkerStatus {
                    slot,
                    pid,
                    state,
                    generation,
                    uptime_ms,
                    restarts,
                    heartbeat_age_ms,
                    rss_bytes,
                    cpu_percent,
                    in_flight,
                    requests_total: restarts.wrapping_mul(7),
                    requests_per_sec,
                    p99_ms,
                    reason,
                    restart_in_ms,
                    last_exit,
                }
            },
        );
    let group = (
        (text(), text(), text(), text()),
        any::<u32>(),
        any::<u32>(),
        text(),
        proptest::option::of(exit()),
        proptest::collection::vec(worker_status, 0..3),
    )
        .prop_map(
            |((name, worker, listen, listen_mode), count, ready, state, last_exit, workers)| {
                GroupStatus {
                    name,
                    worker,
                    listen,
                    listen_mode,
                    count,
                    ready,
                    state,
                    last_exit,
                    workers,
                }
            },
        );
    let reload = proptest::option::of(
        (
            proptest::collection::vec(text(), 0..3),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(groups, done, total)| ReloadProgress {
                groups,
                done,
                total,
            }),
    );
    let line = (
        any::<u64>(),
        text(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(0..5usize),
        text(),
    )
        .prop_map(|(seq, group, slot, level, text)| LogLine {
            seq,
            group,
            slot,
            level: level.map(|i| LogLevel::ALL[i]),
            text,
        });
    let logs = (
        proptest::collection::vec(line, 0..4),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(lines, next, skipped)| LogLines {
            lines,
            next,
            skipped,
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
            stats,
            text(),
            reload
        )
            .prop_map(
                |(master_pid, uptime_ms, groups, ipc, state, reload)| Answer::Status(Box::new(
                    ClusterStatus {
                        master_pid,
                        version: format!("0.{uptime_ms}"),
                        uptime_ms,
                        state,
                        reload,
                        bridge: (uptime_ms % 2 == 0).then(|| BridgeStatus {
                            url: format!("nats://h{master_pid}:4222"),
                            topics: groups.iter().map(|g| g.name.clone()).collect(),
                            state: "connected".into(),
                            required: master_pid % 2 == 0,
                            sent: uptime_ms,
                            received: u64::from(master_pid),
                            dropped: uptime_ms / 3,
                        }),
                        groups,
                        ipc
                    }
                ))
            ),
        proptest::collection::vec(worker, 0..4).prop_map(Answer::Workers),
        logs.prop_map(Answer::Logs),
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
