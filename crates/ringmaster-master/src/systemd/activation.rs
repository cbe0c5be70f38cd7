//! Socket activation: the listening sockets systemd (or
//! `systemd-socket-activate`, or any manager speaking the protocol)
//! passes to the master as fds 3, 4, ... with `LISTEN_FDS`, `LISTEN_PID`
//! and `LISTEN_FDNAMES`.
//!
//! Each group takes one: the one named like the group
//! (`FileDescriptorName=web`), else the one bound to the group's `listen`
//! address. With sockets passed, the master binds nothing itself, so a
//! group that gets none is an error naming it. A `listen_mode =
//! "reuseport"` group runs in shared mode on its one inherited socket
//! (systemd passes one socket per `ListenStream=`): every worker accepts
//! from it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{SockRef, Type};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// A socket systemd passed, not yet taken by a group.
#[derive(Debug)]
pub(crate) struct Passed {
    /// Its `FileDescriptorName=`, when systemd gave one.
    pub(crate) name: Option<String>,
    /// The address it is bound to.
    pub(crate) addr: SocketAddr,
    /// The socket (close-on-exec: a worker gets it only where the master
    /// maps it).
    pub(crate) fd: OwnedFd,
}

/// The sockets systemd passed this master.
#[derive(Debug, Default)]
pub(crate) struct Activation {
    passed: VecDeque<Passed>,
    /// How many were passed in all (for messages).
    count: usize,
}

impl Activation {
    /// The sockets the environment passes to process `pid`; `None` when
    /// it passes none (no `LISTEN_FDS`, or they are meant for another
    /// process). A passed fd that is not a listening TCP socket is an
    /// error saying which.
    pub(crate) fn from_env(pid: u32) -> Result<Option<Activation>, String> {
        let var = |name: &str| std::env::var(name).ok();
        let Some(count) = var("LISTEN_FDS") else {
            return Ok(None);
        };
        match var("LISTEN_PID").map(|p| p.trim().parse::<u32>()) {
            Some(Ok(p)) if p == pid => {}
            // Meant for another process (our parent's): not ours to take.
            Some(Ok(_)) => return Ok(None),
            Some(Err(_)) | None => {
                return Err(format!(
                    "LISTEN_FDS is set but LISTEN_PID is {:?}: socket activation needs LISTEN_PID={pid}; \
                     start the master from systemd's socket unit or systemd-socket-activate",
                    var("LISTEN_PID").unwrap_or_default()
                ));
            }
        }
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("LISTEN_FDS={count:?} is not a number of passed sockets"))?;
        let names = var("LISTEN_FDNAMES");
        let mut passed = VecDeque::new();
        for i in 0..count {
            let raw = FIRST_FD + i as RawFd;
            let name = names
                .as_deref()
                .and_then(|n| n.split(':').nth(i))
                .filter(|n| !n.is_empty() && *n != "unknown")
                .map(str::to_string);
            let what = |why: String| {
                format!(
                    "socket activation: fd {raw}{} is {why}; each ListenStream= of the .socket unit \
                     must be a TCP address (ip:port)",
                    name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
                )
            };
            // Close-on-exec first: a worker gets it only where the master
            // maps it. This also tells whether the fd is open at all.
            // SAFETY: F_SETFD changes no memory; on an fd that is not open
            // it fails with EBADF.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                let e = std::io::Error::last_os_error();
                return Err(what(format!("not open ({e})")));
            }
            // SAFETY: the fd is open, and systemd's protocol hands fds
            // 3..3+LISTEN_FDS to this process: nothing else in the master
            // owns them, and each is taken once (LISTEN_PID is ours; the
            // variables are scrubbed from every child).
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let addr = check(&fd).map_err(what)?;
            passed.push_back(Passed { name, addr, fd });
        }
        Ok(Some(Activation { passed, count }))
    }

    /// Takes the socket for `group`: named after it, else bound to
    /// `listen`. An error names the group and what was passed.
    pub(crate) fn take(&mut self, group: &str, listen: SocketAddr) -> Result<Passed, String> {
        let by_name = self
            .passed
            .iter()
            .position(|p| p.name.as_deref() == Some(group));
        let at = by_name.or_else(|| self.passed.iter().position(|p| p.addr == listen));
        if let Some(at) = at
            && let Some(passed) = self.passed.remove(at)
        {
            return Ok(passed);
        }
        Err(format!(
            "socket activation: none of the {} socket(s) systemd passed is for group \"{group}\" \
             (left: {}); set groups.{group}.listen to the address of one the .socket unit passes, \
             or add a .socket unit of its own for the group (`ListenStream={listen}`, \
             `FileDescriptorName={group}`: the name applies to every socket of a unit)",
            self.count,
            self.describe_left()
        ))
    }

    /// What is passed and not taken, for messages.
    fn describe_left(&self) -> String {
        if self.passed.is_empty() {
            return "none".into();
        }
        self.passed
            .iter()
            .map(|p| match &p.name {
                Some(n) => format!("{n} on {}", p.addr),
                None => p.addr.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The sockets no group took (logged by the caller, then closed).
    pub(crate) fn left(self) -> Vec<Passed> {
        self.passed.into()
    }
}

/// The address of `fd` if it is a listening TCP socket; else what it is.
fn check(fd: &OwnedFd) -> Result<SocketAddr, String> {
    let sock = SockRef::from(fd);
    let kind = sock.r#type().map_err(|e| format!("not a socket ({e})"))?;
    if kind != Type::STREAM {
        return Err("not a stream socket (a ListenDatagram=?)".into());
    }
    let addr = sock
        .local_addr()
        .map_err(|e| format!("a socket without an address ({e})"))?;
    let addr = addr
        .as_socket()
        .ok_or("a Unix socket, not a TCP one (the groups serve TCP)")?;
    match sock.is_listener() {
        Ok(true) => Ok(addr),
        _ => Err(format!("a socket on {addr} that is not listening")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(name: Option<&str>, addr: &str) -> Passed {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        Passed {
            name: name.map(str::to_string),
            addr,
            fd: listener.into(),
        }
    }

    #[test]
    fn a_group_takes_its_named_socket_first_then_one_on_its_address() {
        let web = passed(Some("web"), "127.0.0.1:0");
        let plain = passed(None, "127.0.0.1:0");
        let (web_addr, plain_addr) = (web.addr, plain.addr);
        let mut a = Activation {
            passed: [plain, web].into(),
            count: 2,
        };
        // Named wins, even when the address says otherwise.
        assert_eq!(a.take("web", plain_addr).unwrap().addr, web_addr);
        assert_eq!(a.take("api", plain_addr).unwrap().addr, plain_addr);
        let err = a
            .take("admin", "127.0.0.1:9100".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("group \"admin\""), "{err}");
        assert!(err.contains("none of the 2 socket(s)"), "{err}");
        assert!(err.contains("FileDescriptorName=admin"), "{err}");
        assert!(err.contains("set groups.admin.listen"), "{err}");
    }

    #[test]
    fn only_a_listening_tcp_socket_passes_the_check() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(check(&listener.into()).unwrap(), addr);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(check(&udp.into()).unwrap_err().contains("not a stream"));
        let unbound = socket2::Socket::new(socket2::Domain::IPV4, Type::STREAM, None).unwrap();
        unbound
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let fd: OwnedFd = unbound.into();
        assert!(check(&fd).unwrap_err().contains("not listening"));
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(check(&unix.into()).unwrap_err().contains("Unix socket"));
    }
}
