//! The listening sockets, bound by the master and kept open for its lifetime.
//!
//! Two modes (see `docs/architecture.md`):
//! - [`ListenMode::Shared`]: one socket for the whole group, inherited by
//!   every worker;
//! - [`ListenMode::Reuseport`]: one `SO_REUSEPORT` socket per slot, handed to
//!   each generation of that slot, so the kernel spreads connections evenly.
//!
//! Either way the master holds every socket, so a worker that dies never
//! takes a queue of accepted-but-unserved connections with it. Before
//! reuseport sockets close (scale-down), new connections are steered to
//! the kept ones (`steer`), so closing resets none.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use ringmaster_config::ListenMode;
use socket2::{Domain, Protocol, Socket, Type};

/// The sockets of one group.
#[derive(Debug)]
pub(crate) struct GroupListeners {
    mode: ListenMode,
    backlog: u32,
    /// The address actually bound (the real port when the config said 0).
    addr: SocketAddr,
    /// One socket (shared) or one per slot (reuseport), index = slot.
    sockets: Vec<OwnedFd>,
    /// Whether the kernel's array of the group's sockets is still in slot
    /// order (what steering relies on; see `steer`).
    order_known: bool,
    /// The slots the attached steering program serves, if one is.
    steering: Option<Vec<u32>>,
}

impl GroupListeners {
    /// Binds the group's address: one socket, or `count` reuseport sockets.
    pub(crate) fn bind(
        addr: SocketAddr,
        mode: ListenMode,
        backlog: u32,
        count: usize,
    ) -> io::Result<Self> {
        if mode == ListenMode::Reuseport && addr.port() != 0 {
            // Another SO_REUSEPORT listener of the same user (an old master,
            // another app) would let our bind succeed and silently share the
            // port. A plain socket can't join such a group: if it can't
            // bind, the port is taken.
            probe_free(addr)?;
        }
        let first = bind_one(addr, mode, backlog)?;
        let addr = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound socket has no inet address"))?;
        let mut listeners = GroupListeners {
            mode,
            backlog,
            addr,
            sockets: vec![first.into()],
            order_known: true,
            steering: None,
        };
        listeners.ensure_slots(count, 0)?;
        Ok(listeners)
    }

    /// A group on sockets an old master passed (an upgrade): one per slot
    /// in reuseport mode (as the old master had them), else the first.
    pub(crate) fn passed(
        mut sockets: Vec<OwnedFd>,
        mode: ListenMode,
        backlog: u32,
        count: usize,
        order_known: bool,
    ) -> io::Result<Self> {
        let addr = socket2::SockRef::from(&sockets[0])
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("a passed socket has no inet address"))?;
        if mode == ListenMode::Reuseport {
            // The old master may have steered the group (a slot it saw
            // down); this master starts from the kernel's own spread.
            let _ = crate::steer::unsteer(sockets[0].as_fd());
        } else {
            sockets.truncate(1);
        }
        let mut listeners = GroupListeners {
            mode,
            backlog,
            addr,
            sockets,
            order_known,
            steering: None,
        };
        listeners.ensure_slots(count, 0)?;
        Ok(listeners)
    }

    /// Every socket's fd, in slot order (what an upgrade passes on).
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// A group on one socket bound by someone else (systemd's socket
    /// activation): shared mode, whatever the configuration asked.
    pub(crate) fn inherited(fd: OwnedFd, addr: SocketAddr) -> Self {
        GroupListeners {
            mode: ListenMode::Shared,
            backlog: 0,
            addr,
            sockets: vec![fd],
            order_known: true,
            steering: None,
        }
    }

    /// The address the group listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the kernel's order of the reuseport sockets is slot order
    /// (what steering, and an upgrade's hand-over in slot order, rely on).
    pub(crate) fn order_known(&self) -> bool {
        self.order_known
    }

    /// The listen mode.
    pub(crate) fn mode(&self) -> ListenMode {
        self.mode
    }

    /// In reuseport mode, binds sockets until there is one per slot.
    /// `still_closing`: removed sockets that draining workers may still
    /// hold; when they close, the kernel moves the newest sockets into
    /// their places, so with two or more added now the slot order is lost.
    pub(crate) fn ensure_slots(&mut self, count: usize, still_closing: usize) -> io::Result<()> {
        if self.mode == ListenMode::Reuseport {
            if still_closing > 0 && count >= self.sockets.len() + 2 {
                self.order_known = false;
            }
            while self.sockets.len() < count {
                self.sockets
                    .push(bind_one(self.addr, self.mode, self.backlog)?.into());
            }
        }
        Ok(())
    }

    /// In reuseport mode, sends new connections to the sockets of the
    /// `serving` slots only (`None`: every socket, the kernel's own spread):
    /// around a slot whose worker is down, or slots about to close. Whether
    /// the group is steered as asked (never in shared mode, nor once the
    /// slot order is lost: then the kernel spreads over every socket).
    pub(crate) fn steer(&mut self, serving: Option<&[usize]>) -> io::Result<bool> {
        if self.mode != ListenMode::Reuseport {
            return Ok(false);
        }
        let wanted: Option<Vec<u32>> = match serving {
            Some(s) if self.order_known && !s.is_empty() => {
                Some(s.iter().map(|i| *i as u32).collect())
            }
            _ => None,
        };
        if wanted == self.steering {
            return Ok(wanted.is_some() || serving.is_none());
        }
        match &wanted {
            Some(serving) => crate::steer::steer(self.sockets[0].as_fd(), serving)?,
            None => crate::steer::unsteer(self.sockets[0].as_fd())?,
        }
        let steered = wanted.is_some();
        self.steering = wanted;
        Ok(steered || serving.is_none())
    }

    /// In reuseport mode, closes the master's copies of the sockets of
    /// slots `count..` (steer first: a connection that reaches a closing
    /// socket's queue after its worker's last accept is reset, unless
    /// `net.ipv4.tcp_migrate_req` is 1).
    pub(crate) fn truncate_slots(&mut self, count: usize) {
        if self.mode == ListenMode::Reuseport && count >= 1 {
            self.sockets.truncate(count);
        }
    }

    /// The fd to hand to the worker of `slot`.
    pub(crate) fn fd_for_slot(&self, slot: usize) -> RawFd {
        match self.mode {
            ListenMode::Shared => self.sockets[0].as_raw_fd(),
            _ => self
                .sockets
                .get(slot)
                .unwrap_or(&self.sockets[0])
                .as_raw_fd(),
        }
    }
}

/// Fails with `AddrInUse` when anything listens on `addr`.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into())
}

fn bind_one(addr: SocketAddr, mode: ListenMode, backlog: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if mode == ListenMode::Reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_one_real_port_for_every_slot() {
        let l = GroupListeners::bind("127.0.0.1:0".parse().unwrap(), ListenMode::Reuseport, 64, 3)
            .unwrap();
        assert_ne!(l.addr().port(), 0);
        assert_eq!(l.sockets.len(), 3);
        let fds: std::collections::HashSet<_> = (0..3).map(|s| l.fd_for_slot(s)).collect();
        assert_eq!(fds.len(), 3);
    }

    #[test]
    fn shared_mode_hands_the_same_socket_to_every_slot() {
        let l = GroupListeners::bind("127.0.0.1:0".parse().unwrap(), ListenMode::Shared, 64, 3)
            .unwrap();
        assert_eq!(l.fd_for_slot(0), l.fd_for_slot(2));
    }

    #[test]
    fn a_port_held_by_another_reuseport_group_is_an_error() {
        let other =
            GroupListeners::bind("127.0.0.1:0".parse().unwrap(), ListenMode::Reuseport, 64, 1)
                .unwrap();
        let err = GroupListeners::bind(other.addr(), ListenMode::Reuseport, 64, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// Connects `n` clients, then counts what each socket accepted.
    fn spread(l: &GroupListeners, n: usize) -> Vec<usize> {
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(l.addr()).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let counts = l
            .sockets
            .iter()
            .map(|fd| {
                let s = std::net::TcpListener::from(fd.try_clone().unwrap());
                s.set_nonblocking(true).unwrap();
                std::iter::from_fn(|| s.accept().ok()).count()
            })
            .collect();
        drop(clients);
        counts
    }

    #[test]
    fn steering_sends_new_connections_to_the_kept_sockets_only() {
        let mut l = GroupListeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            ListenMode::Reuseport,
            256,
            3,
        )
        .unwrap();
        assert!(l.steer(Some(&[0, 1])).unwrap());
        let counts = spread(&l, 60);
        assert_eq!(counts[2], 0, "{counts:?}");
        assert_eq!(counts[0] + counts[1], 60, "{counts:?}");
        assert!(
            counts[0] > 0 && counts[1] > 0,
            "both kept sockets get some: {counts:?}"
        );
        assert!(l.steer(Some(&[2])).unwrap());
        assert_eq!(spread(&l, 20), [0, 0, 20], "index i is slot i");
        assert!(l.steer(Some(&[0, 2])).unwrap());
        let counts = spread(&l, 60);
        assert!(
            counts[1] == 0 && counts[0] > 0 && counts[2] > 0,
            "around slot 1: {counts:?}"
        );
        assert!(l.steer(None).unwrap());
        let counts = spread(&l, 90);
        assert!(
            counts.iter().all(|c| *c > 0),
            "the kernel spreads again: {counts:?}"
        );
        // Shared mode has one socket: nothing to steer.
        let mut shared =
            GroupListeners::bind("127.0.0.1:0".parse().unwrap(), ListenMode::Shared, 64, 2)
                .unwrap();
        assert!(!shared.steer(Some(&[0])).unwrap());
    }

    #[test]
    fn the_slot_order_is_lost_when_sockets_are_added_while_others_close() {
        let mut l =
            GroupListeners::bind("127.0.0.1:0".parse().unwrap(), ListenMode::Reuseport, 64, 2)
                .unwrap();
        l.ensure_slots(3, 1).unwrap();
        assert!(l.order_known, "one added: it takes the only free place");
        l.ensure_slots(5, 1).unwrap();
        assert!(!l.order_known);
        assert!(
            !l.steer(Some(&[0, 1])).unwrap(),
            "no steering without the order"
        );
    }

    #[test]
    fn a_port_in_use_is_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        for mode in [ListenMode::Shared, ListenMode::Reuseport] {
            let err = GroupListeners::bind(addr, mode, 64, 2).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        }
    }
}
