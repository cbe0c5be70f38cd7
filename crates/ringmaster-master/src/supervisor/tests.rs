//! The supervisor's policies without a process: a scripted [`Spawner`]
//! records each spawn and keeps the other ends of its channels, the tests
//! play the worker's messages and exits as events, and tokio's paused clock
//! stands in for time. Listeners are real (loopback, port 0, shared mode).

use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringmaster_config::Config;
use ringmaster_proto::{MasterMsg, Target, WorkerMsg};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::policy::CONFIRM;
use super::{Phase, Supervisor};
use crate::ServeOptions;
use crate::spawn::{SpawnSpec, Spawner, WorkerCommand, WorkerEvent, WorkerLink};

/// Above Linux's largest pid (2^22): no signal can reach a real process.
const FAKE_PID: u32 = 10_000_000;
/// Frames a fake worker's queue holds before the master finds it full.
const FAKE_QUEUE: usize = 4;

/// One process the fake started, as the worker's side sees it.
struct Spawned {
    serial: u64,
    slot: usize,
    commands: mpsc::Receiver<WorkerCommand>,
    frames: mpsc::Receiver<Bytes>,
    _adopt: std::os::unix::net::UnixDatagram,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Vec<Spawned>>>);

impl Spawner for Fake {
    fn spawn(
        &mut self,
        spec: &SpawnSpec<'_>,
        serial: u64,
        _events: mpsc::Sender<WorkerEvent>,
    ) -> std::io::Result<WorkerLink> {
        let (commands, commands_rx) = mpsc::channel(8);
        let (frames, frames_rx) = mpsc::channel(FAKE_QUEUE);
        let (adopt, worker_end) = std::os::unix::net::UnixDatagram::pair()?;
        self.0.lock().unwrap().push(Spawned {
            serial,
            slot: spec.slot,
            commands: commands_rx,
            frames: frames_rx,
            _adopt: worker_end,
        });
        Ok(WorkerLink {
            pid: FAKE_PID + serial as u32,
            commands,
            frames,
            adopt,
        })
    }
}

impl Fake {
    fn serials(&self) -> Vec<u64> {
        self.0.lock().unwrap().iter().map(|s| s.serial).collect()
    }

    /// Whether the master asked to kill `serial` (since last asked).
    fn killed(&self, serial: u64) -> bool {
        let mut all = self.0.lock().unwrap();
        let s = all.iter_mut().find(|s| s.serial == serial).unwrap();
        matches!(s.commands.try_recv(), Ok(WorkerCommand::Kill))
    }

    /// Whether the master told `serial` to drain (frames read so far).
    fn told_to_drain(&self, serial: u64) -> bool {
        let mut all = self.0.lock().unwrap();
        let s = all.iter_mut().find(|s| s.serial == serial).unwrap();
        let mut drained = false;
        while let Ok(frame) = s.frames.try_recv() {
            let mut buf = bytes::BytesMut::from(&frame[..]);
            while let Some(msg) = ringmaster_proto::decode_frame::<MasterMsg>(&mut buf).unwrap() {
                drained |= matches!(msg, MasterMsg::Drain { .. });
            }
        }
        drained
    }

    fn slot_of(&self, serial: u64) -> usize {
        let all = self.0.lock().unwrap();
        all.iter().find(|s| s.serial == serial).unwrap().slot
    }
}

/// A supervisor of group `web` with `keys`, on the fake spawner.
fn supervisor(keys: &str) -> (Supervisor, Fake) {
    let toml = format!(
        "[groups.web]\nworker = \"web\"\nlisten = \"127.0.0.1:0\"\nlisten_mode = \"shared\"\n{keys}"
    );
    let config = Config::from_toml_str(&toml, "test").unwrap();
    let opts = ServeOptions::new(config, vec!["web".into()]);
    let mut sup = Supervisor::new(opts, "/nonexistent/ringmaster-test".into()).unwrap();
    let fake = Fake::default();
    sup.spawner = Box::new(fake.clone());
    (sup, fake)
}

fn say(sup: &mut Supervisor, serial: u64, msg: WorkerMsg) {
    sup.on_event(WorkerEvent::Message { serial, msg });
}

fn ready(sup: &mut Supervisor, serial: u64) {
    let pid = FAKE_PID + serial as u32;
    let version = ringmaster_proto::PROTOCOL_VERSION;
    say(sup, serial, WorkerMsg::Hello { version, pid });
    say(sup, serial, WorkerMsg::Ready { phases: Vec::new() });
}

fn exit(sup: &mut Supervisor, serial: u64, code: i32) {
    let status = std::process::ExitStatus::from_raw(code << 8);
    sup.on_event(WorkerEvent::Exited { serial, status });
}

/// How long until `slot` restarts, if a restart is due.
fn restart_in(sup: &Supervisor, slot: usize) -> Option<Duration> {
    sup.groups[0].slots[slot]
        .restart_at
        .map(|at| at - Instant::now())
}

fn current(sup: &Supervisor, slot: usize) -> Option<u64> {
    sup.groups[0].slots[slot].current
}

/// Lets `d` pass, then runs the loop's deadline checks.
async fn pass(sup: &mut Supervisor, d: Duration) {
    tokio::time::advance(d).await;
    sup.tick(Instant::now());
}

/// After a deadline passed: silence is confirmed [`CONFIRM`] later (the
/// loop reads what arrived meanwhile), and only then punished.
async fn confirm(sup: &mut Supervisor, fake: &Fake, serial: u64) {
    assert!(!fake.killed(serial), "not before the confirmation");
    pass(sup, CONFIRM - Duration::from_millis(1)).await;
    assert!(!fake.killed(serial), "not before the confirmation");
    pass(sup, Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_doubling_to_the_cap_and_a_stable_run_resets_them() {
    let (mut sup, fake) = supervisor(
        "count = 1\nrestart_backoff = \"100ms\"\nrestart_backoff_max = \"1s\"\nmin_uptime = \"5s\"\n",
    );
    sup.start_all();
    let mut serial = current(&sup, 0).unwrap();
    ready(&mut sup, serial);
    let mut delays = Vec::new();
    for _ in 0..6 {
        exit(&mut sup, serial, 1);
        assert_eq!(current(&sup, 0), None, "no restart before the delay");
        let delay = restart_in(&sup, 0).unwrap();
        delays.push(delay.as_millis());
        // Not a moment early.
        pass(&mut sup, delay - Duration::from_millis(1)).await;
        assert_eq!(current(&sup, 0), None);
        pass(&mut sup, Duration::from_millis(1)).await;
        serial = current(&sup, 0).expect("restarted at its time");
    }
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(sup.groups[0].slots[0].strikes, 6);
    // Ready for min_uptime: a stable run clears the strikes, and the next
    // exit restarts at once.
    ready(&mut sup, serial);
    pass(&mut sup, Duration::from_secs(5)).await;
    exit(&mut sup, serial, 1);
    let next = current(&sup, 0).expect("restarted at once");
    assert_ne!(next, serial);
    assert_eq!(restart_in(&sup, 0), None);
    assert_eq!(sup.groups[0].slots[0].strikes, 0);
    assert_eq!(fake.serials().len(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_never_reports_ready_is_killed_at_boot_timeout_and_backs_off() {
    let (mut sup, fake) = supervisor("count = 1\nboot_timeout = \"2s\"\n");
    sup.start_all();
    let serial = current(&sup, 0).unwrap();
    pass(&mut sup, Duration::from_millis(1999)).await;
    assert!(!fake.killed(serial));
    pass(&mut sup, Duration::from_millis(1)).await;
    confirm(&mut sup, &fake, serial).await;
    assert!(fake.killed(serial), "killed at boot_timeout");
    let why = sup.workers[&serial].killed_for.clone().unwrap();
    assert!(why.contains("boot_timeout"), "{why}");
    exit(&mut sup, serial, 137);
    assert_eq!(restart_in(&sup, 0), Some(Duration::from_millis(100)));
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_heartbeats_stop_is_killed_at_heartbeat_timeout() {
    let (mut sup, fake) = supervisor("count = 1\nheartbeat_timeout = \"3s\"\n");
    sup.start_all();
    let serial = current(&sup, 0).unwrap();
    ready(&mut sup, serial);
    for _ in 0..5 {
        pass(&mut sup, Duration::from_secs(2)).await;
        say(&mut sup, serial, WorkerMsg::Heartbeat);
    }
    assert!(!fake.killed(serial), "heartbeating every 2 s keeps it");
    pass(&mut sup, Duration::from_millis(2999)).await;
    assert!(!fake.killed(serial));
    pass(&mut sup, Duration::from_millis(1)).await;
    confirm(&mut sup, &fake, serial).await;
    assert!(fake.killed(serial), "killed 3 s after the last heartbeat");
    assert!(
        sup.workers[&serial]
            .killed_for
            .as_ref()
            .unwrap()
            .contains("heartbeat")
    );
}

#[tokio::test(start_paused = true)]
async fn scale_down_drains_the_highest_slot_and_kills_it_past_drain_timeout() {
    let (mut sup, fake) = supervisor("count = 3\ndrain_timeout = \"2s\"\n");
    sup.start_all();
    let serials: Vec<u64> = (0..3).map(|s| current(&sup, s).unwrap()).collect();
    for &s in &serials {
        ready(&mut sup, s);
    }
    sup.scale_group(0, 1);
    for &s in &serials {
        let slot = fake.slot_of(s);
        assert_eq!(fake.told_to_drain(s), slot > 0, "slot {slot}");
    }
    assert_eq!(sup.workers[&serials[0]].phase, Phase::Ready);
    assert_eq!(sup.workers[&serials[2]].phase, Phase::Draining);
    // Slot 1 finishes in time; slot 2 does not. The master waits the
    // drain_timeout and one second more before it kills.
    exit(&mut sup, serials[1], 0);
    pass(&mut sup, Duration::from_millis(2999)).await;
    assert!(!fake.killed(serials[2]));
    pass(&mut sup, Duration::from_millis(1)).await;
    assert!(fake.killed(serials[2]), "killed past drain_timeout");
    exit(&mut sup, serials[2], 137);
    // A drained worker's exit is expected: nothing restarts.
    pass(&mut sup, Duration::from_secs(30)).await;
    assert_eq!(fake.serials().len(), 3);
    assert_eq!(sup.groups[0].slots.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_ipc_queue_stays_full_is_killed_at_the_stall_timeout() {
    let (mut sup, fake) = supervisor("count = 2\n");
    let stall = sup.opts.config.server.ipc_stall_timeout;
    sup.start_all();
    let (a, b) = (current(&sup, 0).unwrap(), current(&sup, 1).unwrap());
    ready(&mut sup, a);
    ready(&mut sup, b);
    say(&mut sup, b, WorkerMsg::Subscribe { topic: "t".into() });
    // b never reads: its queue fills, and stays full.
    for _ in 0..FAKE_QUEUE + 2 {
        let to = Target::All;
        let payload = vec![1];
        say(
            &mut sup,
            a,
            WorkerMsg::Publish {
                to,
                topic: "t".into(),
                payload,
            },
        );
    }
    assert!(sup.workers[&b].queue_full_since.is_some());
    pass(&mut sup, stall - Duration::from_millis(1)).await;
    assert!(!fake.killed(b));
    pass(&mut sup, Duration::from_millis(1)).await;
    assert!(fake.killed(b), "killed as stalled");
    assert!(!fake.killed(a), "the publisher is not");
    assert!(
        sup.workers[&b]
            .killed_for
            .as_ref()
            .unwrap()
            .contains("stalled")
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_whose_replacement_dies_before_ready_stops_and_keeps_the_old_workers() {
    let dir = std::env::temp_dir().join(format!("ringmaster-sup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reload.toml");
    let keys = "count = 2\n";
    let (mut sup, fake) = supervisor(keys);
    std::fs::write(
        &file,
        format!(
            "[groups.web]\nworker = \"web\"\nlisten = \"127.0.0.1:0\"\nlisten_mode = \"shared\"\n{keys}"
        ),
    )
    .unwrap();
    sup.opts.config_path = Some(file.clone());
    sup.start_all();
    let old: Vec<u64> = (0..2).map(|s| current(&sup, s).unwrap()).collect();
    for &s in &old {
        ready(&mut sup, s);
    }
    sup.start_reload(None, None).unwrap();
    sup.tick(Instant::now());
    let fresh: Vec<u64> = fake
        .serials()
        .into_iter()
        .filter(|s| !old.contains(s))
        .collect();
    assert_eq!(fresh.len(), 1, "one slot at a time: {fresh:?}");
    exit(&mut sup, fresh[0], 1);
    pass(&mut sup, Duration::from_secs(10)).await;
    assert!(sup.reload.is_none(), "the reload stopped");
    assert_eq!(fake.serials().len(), 3, "no other replacement was started");
    for (slot, &s) in old.iter().enumerate() {
        assert_eq!(current(&sup, slot), Some(s), "slot {slot} keeps its worker");
        assert!(!fake.told_to_drain(s));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn the_lifecycle_channel_tells_spawn_ready_exit_and_restart_in_order() {
    use ringmaster_proto::Lifecycle;
    let (mut sup, _fake) = supervisor("count = 1\nrestart_backoff = \"100ms\"\n");
    sup.start_all();
    let first = current(&sup, 0).unwrap();
    ready(&mut sup, first);
    exit(&mut sup, first, 1);
    pass(&mut sup, Duration::from_millis(100)).await;
    let (events, _) = sup.lifecycle.subscribe(usize::MAX);
    let kinds: Vec<String> = events
        .iter()
        .map(|r| match &r.what {
            Lifecycle::WorkerSpawned { generation, .. } => format!("spawned {generation}"),
            Lifecycle::WorkerReady { .. } => "ready".into(),
            Lifecycle::WorkerExited {
                expected,
                restart_in_ms,
                status,
                ..
            } => format!("exited {status} expected={expected} restart={restart_in_ms:?}"),
            other => format!("{other}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "spawned 0",
            "ready",
            "exited exit code 1 expected=false restart=Some(100)",
            "spawned 1"
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3], "numbered from 0, one apart");
}
