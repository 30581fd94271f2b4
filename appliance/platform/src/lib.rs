//! The platform layer: the only crate of Hop with `unsafe` code, each block with a
//! `// SAFETY:` note; every other crate forbids it, so this fence is a crate boundary. It owns raw socket operations the runtimes do not expose: peeking at a
//! connection's first bytes without consuming them, moving an accepted socket from the
//! data plane's runtime to the control plane's, and raising the open-files limit; and in
//! [`pty`], pseudo-terminals and the set-up of an SSH session's child process; in [`term`], the
//! user's terminal in raw mode (`hop play`); in [`ktls`], kernel TLS; in [`account`], taking
//! on an operating-system account (a session's child, a listener opened as the login); in
//! [`split`], one socket shared by a worker's two relay directions. Three safe
//! leaves (each `#![forbid(unsafe_code)]`) live here because they are facts of the process, not
//! of any service: [`host`] (the machine's name), [`signals`] (the process-wide shutdown signal)
//! and [`clock`] (the appliance's one reader of the clocks, std's and tokio's).

#![allow(unsafe_code)]

pub mod account;
pub mod clock;
pub mod hidraw;
pub mod host;
pub mod ktls;
pub mod pty;
pub mod signals;
pub mod split;
pub mod term;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

/// Copies the bytes waiting on a socket into `buf` without consuming them, without blocking.
/// `Ok(0)` means the peer closed; `WouldBlock` means nothing is waiting yet.
pub fn peek(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    // SAFETY: `fd` is an open socket owned by `sock`, borrowed for the duration of this call;
    // `buf` is a valid, writable region of `buf.len()` bytes that recv may fill.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

mod sealed {
    pub trait Sealed {}
}

/// A TCP stream type of the runtimes Hop uses, which owns its open descriptor for as long as
/// it lives: the only types [`into_std_stream`] and [`dup_stream`] accept, so that no other
/// type's raw descriptor number (one it does not own, or one already closed) reaches them.
pub trait OwnedTcpStream: AsRawFd + sealed::Sealed {}

impl sealed::Sealed for std::net::TcpStream {}
impl OwnedTcpStream for std::net::TcpStream {}
impl sealed::Sealed for tokio::net::TcpStream {}
impl OwnedTcpStream for tokio::net::TcpStream {}
impl sealed::Sealed for monoio::net::TcpStream {}
impl OwnedTcpStream for monoio::net::TcpStream {}

/// Takes ownership of a socket's descriptor away from its runtime wrapper, as a std stream.
pub fn into_std_stream(sock: impl OwnedTcpStream + IntoRawFd) -> std::net::TcpStream {
    let fd = sock.into_raw_fd();
    // SAFETY: `into_raw_fd` released ownership of an open TCP socket descriptor to us (the
    // sealed `OwnedTcpStream` types are TCP streams that own theirs), and nothing else will
    // close it: the std stream is now its only owner.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

/// A duplicate of a socket's descriptor (its own descriptor, the same socket), for a runtime's
/// socket type that lends only its raw descriptor: shutting the duplicate down ends the socket
/// for its owner too.
pub fn dup_stream(sock: &impl OwnedTcpStream) -> io::Result<std::net::TcpStream> {
    // SAFETY: `sock` is one of the sealed `OwnedTcpStream` types, which own an open descriptor
    // for as long as they live; it is borrowed for this call, and the borrowed descriptor is
    // only duplicated, never closed.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    Ok(std::net::TcpStream::from(fd.try_clone_to_owned()?))
}

/// The open-files limit: the soft limit before and after [`raise_nofile_limit`], and the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// When this process's `RLIMIT_NOFILE` soft limit is under `wanted`, raises it to the hard limit
/// (no privilege needed); never lowers it. A process that holds thousands of sockets (the load
/// test) needs more than the usual soft default of 1024.
pub fn raise_nofile_limit(wanted: u64) -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that getrlimit fills; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (before, hard) = (lim.rlim_cur, lim.rlim_max);
    if before >= wanted || before >= hard {
        return Ok(NofileLimit {
            before,
            now: before,
            hard,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `raised` is a valid `rlimit` read by setrlimit; a soft limit at most the hard limit
    // needs no privilege and affects only this process's descriptor table.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        before,
        now: raised.rlim_cur,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn peek_does_not_consume() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            peek(&s, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        c.write_all(b"hello").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(peek(&s, &mut buf).unwrap(), 5);
        assert_eq!(peek(&s, &mut buf).unwrap(), 5);
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(peek(&s, &mut buf).unwrap(), 0);
        let s2 = into_std_stream(s);
        assert!(s2.peer_addr().is_ok());
    }

    #[test]
    fn nofile_limit_is_raised_up_to_the_hard_limit_and_never_lowered() {
        let first = raise_nofile_limit(0).unwrap();
        assert_eq!(first.now, first.before, "asking for less changes nothing");
        let up = raise_nofile_limit(u64::MAX).unwrap();
        assert_eq!(up.now, first.hard, "raised to the hard limit, no further");
        let again = raise_nofile_limit(1).unwrap();
        assert_eq!(again.now, first.hard, "never lowered");
    }
}
