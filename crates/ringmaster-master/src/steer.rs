//! Steering a group's `SO_REUSEPORT` sockets: a classic BPF program on
//! the group that picks which socket a new connection goes to, so that a
//! socket about to close receives nothing new.
//!
//! Without it, closing a slot's socket on scale-down resets any connection
//! that reached its queue after the draining worker's last accept (unless
//! `net.ipv4.tcp_migrate_req` is 1). With it, new connections spread over
//! the kept sockets only (by the packet's hash, as the kernel would), the
//! removed ones drain and close, and the program is detached again.
//!
//! The program returns an index into the kernel's array of the group's
//! sockets. That array is in the order the sockets started listening, and
//! a socket that closes is replaced by the last one: as long as sockets
//! are added at the end and removed from the end, index `i` is slot `i`
//! (`GroupListeners` keeps track of when that stops being true).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `asm-generic/socket.h` (the same on every architecture Linux runs
/// ringmaster on).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

// linux/bpf_common.h and linux/filter.h.
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_MOD: u16 = 0x90;
const BPF_K: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_RET: u16 = 0x06;
const BPF_A: u16 = 0x10;
/// Ancillary data: the packet's hash (`skb->hash`).
const SKF_AD_RXHASH: u32 = 0xffff_f000 + 32;
/// Classic BPF programs have at most this many instructions.
const MAX_INSNS: usize = 4096;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program that sends every new connection to one of `serving` (socket
/// indices), chosen by the packet's hash: `serving[hash % len]`.
fn program(serving: &[u32]) -> io::Result<Vec<libc::sock_filter>> {
    let n = u32::try_from(serving.len()).unwrap_or(0);
    if n == 0 || 2 * serving.len() + 3 > MAX_INSNS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot steer to that many sockets",
        ));
    }
    let mut code = vec![
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_RXHASH),
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, n),
    ];
    if serving.iter().enumerate().all(|(i, s)| *s as usize == i) {
        // The first `n` sockets: the remainder is the index.
        code.push(insn(BPF_RET | BPF_A, 0, 0, 0));
        return Ok(code);
    }
    for (i, s) in serving.iter().enumerate() {
        // A == i ? return serving[i] : next pair.
        code.push(insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, i as u32));
        code.push(insn(BPF_RET | BPF_K, 0, 0, *s));
    }
    code.push(insn(BPF_RET | BPF_K, 0, 0, serving[0]));
    Ok(code)
}

/// Attaches the program that spreads new connections over the sockets at
/// `serving` (indices in the group) to the group `socket` belongs to.
pub(crate) fn steer(socket: BorrowedFd<'_>, serving: &[u32]) -> io::Result<()> {
    let mut code = program(serving)?;
    let prog = libc::sock_fprog {
        len: code.len() as libc::c_ushort,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: setsockopt with a valid fd and a sock_fprog that points at
    // `code`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches the group's program: the kernel spreads over every socket again.
pub(crate) fn unsteer(socket: BorrowedFd<'_>) -> io::Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: setsockopt with a valid fd and an int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_REUSEPORT_BPF,
            std::ptr::from_ref(&zero).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // ENOENT: no program attached; nothing to undo.
    if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_map_the_hash_to_the_serving_sockets() {
        let identity = program(&[0, 1, 2]).unwrap();
        assert_eq!(identity.len(), 3);
        let mapped = program(&[0, 2]).unwrap();
        assert_eq!(mapped.len(), 2 + 2 * 2 + 1);
        assert_eq!(mapped[5].k, 2, "hash % 2 == 1 -> socket 2");
        assert!(program(&[]).is_err());
    }
}
