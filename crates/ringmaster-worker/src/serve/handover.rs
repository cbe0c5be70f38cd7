//! Connections the master hands over: it takes them from the queue of a
//! slot of this group that has no ready worker and sends each one's fd,
//! one per datagram (`SCM_RIGHTS`), on a Unix socket. This module receives
//! them, waiting ([`adopted`]) while the loop accepts, and without waiting
//! ([`take_pending`]) once the drain starts.

use std::os::fd::{AsRawFd, FromRawFd};

use tokio::net::{TcpStream, UnixDatagram};

/// The next connection handed over on `sock` (one fd per datagram).
pub(super) async fn adopted(sock: Option<&UnixDatagram>) -> std::io::Result<TcpStream> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || recv_fd(sock.as_raw_fd())) {
            Ok(Some(fd)) => match adopt_fd(fd) {
                Ok(tcp) => return Ok(tcp),
                // That connection only: the socket still hands over others.
                Err(e) => tracing::debug!(error = %e, "a handed-over connection cannot be served"),
            },
            // A datagram without a right: nothing to serve.
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A connection already handed over on `sock` and not taken yet, without
/// waiting; `None` when there is none (or the socket failed).
pub(super) fn take_pending(sock: &UnixDatagram) -> Option<std::io::Result<TcpStream>> {
    let Ok(Some(fd)) = sock.try_io(tokio::io::Interest::READABLE, || recv_fd(sock.as_raw_fd()))
    else {
        return None;
    };
    Some(adopt_fd(fd))
}

/// The connection behind an fd received by `SCM_RIGHTS`.
fn adopt_fd(fd: std::os::fd::RawFd) -> std::io::Result<TcpStream> {
    // SAFETY: the fd arrived by SCM_RIGHTS: this process owns it.
    let tcp = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    tcp.set_nonblocking(true)?;
    TcpStream::from_std(tcp)
}

/// Receives one datagram and the fd it carries, if any.
fn recv_fd(sock: std::os::fd::RawFd) -> std::io::Result<Option<std::os::fd::RawFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: recvmsg on a socket this process owns with a valid msghdr;
    // rights received get close-on-exec.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: walking the control messages recvmsg filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let got = std::ptr::read_unaligned(data.add(i));
                    if fd.is_none() {
                        fd = Some(got);
                    } else {
                        // One right per datagram: close any extra.
                        libc::close(got);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(fd)
}
