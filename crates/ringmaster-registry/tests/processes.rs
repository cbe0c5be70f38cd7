//! Two processes increment one counter in one segment, each in its own
//! row, a million times each: the sum is exact. The child processes are
//! this test binary again, running the ignored `child_increments` with the
//! segment's fd and its row in the environment.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::Ordering;

use ringmaster_registry::{Kind, Segment};

const CHILD_ENV: &str = "RINGMASTER_REGISTRY_TEST_CHILD";
const INCREMENTS: u64 = 1_000_000;

#[test]
fn two_processes_increment_one_counter_exactly() {
    let seg = Segment::create(1 << 20, 2).unwrap();
    let i = seg
        .register("n_total", "Test.", Kind::Counter, &[], &[])
        .unwrap();
    // An inheritable copy of the memfd (the original is close-on-exec).
    // SAFETY: dup of an fd we own.
    let fd = unsafe { libc::dup(seg.fd().unwrap().as_raw_fd()) };
    assert!(fd >= 0);
    // SAFETY: `fd` is ours; it closes when this test ends.
    let _keep = unsafe { OwnedFd::from_raw_fd(fd) };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2u32)
        .map(|row| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_increments",
                    "--include-ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, format!("{fd},{row},{i}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child failed");
    }
    assert_eq!(seg.sum(i), 2 * INCREMENTS);
}

/// The child's part; does nothing unless started by the test above.
#[test]
#[ignore = "run by two_processes_increment_one_counter_exactly in a child process"]
fn child_increments() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<u32> = spec.split(',').map(|p| p.parse().unwrap()).collect();
    // SAFETY: the parent passed us this inherited fd.
    let fd = unsafe { OwnedFd::from_raw_fd(parts[0] as i32) };
    let seg = Segment::open(fd, true).unwrap();
    let cell = &seg.cells(parts[2], parts[1])[0];
    for _ in 0..INCREMENTS {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}
