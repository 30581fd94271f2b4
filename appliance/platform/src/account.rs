//! Operating-system accounts as a process takes them on: switching a forked child to an
//! account (supplementary groups, then group, then user, with a check that root cannot be
//! regained), and opening a listening socket with an account's permissions instead of this
//! process's.
//!
//! Everything here runs in a forked child between `fork` and `exec`/`_exit`, so it uses only
//! async-signal-safe calls on data prepared before the fork.

use std::io;
use std::os::fd::AsRawFd;

/// The account a session's program runs as: its uid, primary gid, every supplementary group
/// and its home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Drops this (forked, single-threaded) process to `uid`/`gid` with exactly `groups` as its
/// supplementary groups, and checks that root cannot be regained.
///
/// # Safety
/// Call only in a child between `fork` and `exec` (or `_exit`): it changes the credentials of
/// the whole process and uses only async-signal-safe calls.
pub(crate) unsafe fn become_account(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: plain system calls on integers and a slice that outlives the call.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) < 0
            || libc::setgid(gid) < 0
            || libc::setuid(uid) < 0
        {
            return Err(io::Error::last_os_error());
        }
        if uid != 0 && (libc::setuid(0) == 0 || libc::geteuid() == 0) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

/// Opens a TCP listener on `addr` as `account` rather than as this process: a forked child
/// switches to the account, creates and binds the socket (so the kernel's checks on
/// privileged ports apply to the account, and the socket is the account's), and passes it back
/// over a socket pair. The listener comes back non-blocking and listening.
pub fn listen_as(
    account: &Account,
    addr: std::net::SocketAddr,
) -> io::Result<std::net::TcpListener> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let sockaddr = socket2::SockAddr::from(addr);
    let groups = account.groups.clone();
    let (uid, gid) = (account.uid, account.gid);
    // SAFETY: after fork the child runs only async-signal-safe calls (setgroups, setgid,
    // setuid, socket, setsockopt, bind, sendmsg, _exit) on data prepared before the fork, and
    // always ends with `_exit`, so it never returns into the runtime that forked it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the forked child (see above).
        unsafe {
            let result = match become_account(uid, gid, &groups) {
                Ok(()) => bound_socket(&sockaddr),
                Err(e) => Err(e.raw_os_error().unwrap_or(libc::EPERM)),
            };
            let code = match result {
                Ok(fd) => send_result(theirs.as_raw_fd(), 0, Some(fd)),
                Err(errno) => send_result(theirs.as_raw_fd(), errno, None),
            };
            libc::_exit(code);
        }
    }
    drop(theirs);
    let received = receive_result(&ours);
    let status = wait_child(pid)?;
    let fd = received?;
    if status != 0 {
        return Err(io::Error::other("the listener helper failed"));
    }
    let socket = socket2::Socket::from(fd);
    socket.set_nonblocking(true)?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Creates a close-on-exec TCP socket and binds it to `addr`; the errno on failure.
///
/// # Safety
/// Async-signal-safe; meant for the forked child of [`listen_as`].
unsafe fn bound_socket(addr: &socket2::SockAddr) -> Result<libc::c_int, i32> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: plain system calls; `addr` points to a valid socket address of `addr.len()` bytes.
    unsafe {
        let fd = libc::socket(
            libc::c_int::from(addr.family()),
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(errno());
        }
        let one: libc::c_int = 1;
        let _ = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if libc::bind(fd, addr.as_ptr().cast(), addr.len()) < 0 {
            return Err(errno());
        }
        Ok(fd)
    }
}

/// A control buffer big enough for one descriptor, aligned for `cmsghdr`.
#[repr(C)]
union FdControl {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

/// Sends `errno` (0 for success) and, with it, `fd` as `SCM_RIGHTS`. Returns the child's exit
/// code: 0 when the message went out.
///
/// # Safety
/// Async-signal-safe; meant for the forked child of [`listen_as`].
unsafe fn send_result(chan: libc::c_int, errno: i32, fd: Option<libc::c_int>) -> libc::c_int {
    let mut payload = errno.to_ne_bytes();
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = FdControl { bytes: [0; 64] };
    // SAFETY: the msghdr points at the live `iov` and `control`; CMSG_* stay inside `control`,
    // which has room for one header and one descriptor.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32);
            msg.msg_control = control.bytes.as_mut_ptr().cast();
            msg.msg_controllen = space as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        }
        if libc::sendmsg(chan, &msg, 0) < 0 {
            1
        } else {
            0
        }
    }
}

/// Reads the child's answer: the bound socket, or the error it met.
fn receive_result(chan: &std::os::unix::net::UnixStream) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut payload = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = FdControl { bytes: [0; 64] };
    // SAFETY: the msghdr points at the live `iov` and `control`; recvmsg writes at most their
    // lengths; the header walk stays within `msg_controllen` as the CMSG_* macros guarantee.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.bytes.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of::<FdControl>();
        let n = libc::recvmsg(chan.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fd = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                fd = Some(std::os::fd::OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let errno = i32::from_ne_bytes(payload);
        match (n, errno, fd) {
            (4, 0, Some(fd)) => Ok(fd),
            (4, e, _) if e != 0 => Err(io::Error::from_raw_os_error(e)),
            _ => Err(io::Error::other("the listener helper sent no socket")),
        }
    }
}

/// Waits for child `pid` and returns its exit code (`EINTR` retried).
fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes one int through the valid pointer; `pid` is our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(io::Error::other("the listener helper ended abnormally"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nobody` with two supplementary groups; these tests need root to switch, and say so.
    fn nobody() -> Option<Account> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: switching accounts needs root");
            return None;
        }
        Some(Account {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 5, 7],
            home: "/nonexistent".into(),
        })
    }

    #[test]
    fn a_child_takes_on_the_whole_account() {
        let Some(account) = nobody() else { return };
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "id -u; id -g; id -G; pwd"]);
        crate::pty::prepare_child(
            &mut cmd,
            crate::pty::ChildSetup {
                new_session: true,
                controlling_tty: false,
                switch_to: Some(account),
            },
        );
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "65534");
        assert_eq!(lines[1], "65534");
        let mut groups: Vec<u32> = lines[2].split(' ').map(|g| g.parse().unwrap()).collect();
        groups.sort_unstable();
        assert_eq!(groups, vec![5, 7, 65534]);
        // The home does not exist: the session starts in `/`, as OpenSSH's does.
        assert_eq!(lines[3], "/");
    }

    #[test]
    fn a_listener_opened_as_an_account_gets_its_permissions() {
        let Some(account) = nobody() else { return };
        let l = listen_as(&account, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let c = std::net::TcpStream::connect(addr).unwrap();
        drop(c);
        let err = listen_as(&account, "127.0.0.1:1".parse().unwrap()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        let root = Account {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/".into(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(listen_as(&root, std::net::SocketAddr::from(([127, 0, 0, 1], port))).is_ok());
    }
}
