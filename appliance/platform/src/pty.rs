//! Pseudo-terminals and the process set-up of an SSH session's child: opening a PTY pair,
//! resizing it, making the child a session leader with the PTY as its controlling terminal,
//! and dropping to the requested user's supplementary groups before `exec`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

pub use super::account::Account;
use super::account::become_account;

/// Both ends of a fresh pseudo-terminal.
#[derive(Debug)]
pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// A terminal size in characters and pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
    pub px_width: u16,
    pub px_height: u16,
}

impl WindowSize {
    fn to_winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: self.px_width,
            ws_ypixel: self.px_height,
        }
    }
}

/// Opens a PTY pair with `size`. The master is non-blocking and close-on-exec; the slave is
/// close-on-exec too (the child receives it as its standard streams, which `Command` dups).
pub fn open_pty(size: WindowSize) -> io::Result<PtyPair> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let ws = size.to_winsize();
    // SAFETY: openpty writes two descriptors into the two valid `c_int`s we pass; the name
    // pointer may be null, and `termp` null means default settings; `winp` points to a valid
    // winsize that outlives the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        set_cloexec(fd)?;
    }
    set_nonblocking(&master)?;
    Ok(PtyPair { master, slave })
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers a PTY master with the tokio reactor, taking ownership of it.
pub fn async_master(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    let file = std::fs::File::from(fd);
    // SAFETY: the File owns the descriptor and is moved into the AsyncFd, so the descriptor
    // stays open and refers to the same file description until the AsyncFd is dropped, and
    // `as_raw_fd` on a File always returns the descriptor it owns.
    unsafe { tokio::io::unix::AsyncFd::register(file) }.map_err(|e| e.into_parts().1)
}

/// Tells the terminal (and so the foreground process group, by SIGWINCH) its new size.
pub fn set_window_size(master: &impl AsRawFd, size: WindowSize) -> io::Result<()> {
    let ws = size.to_winsize();
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer we pass; the descriptor is
    // borrowed open for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How the child is set up between `fork` and `exec`.
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    /// Start a new session; with `controlling_tty`, make standard input its controlling terminal.
    pub new_session: bool,
    pub controlling_tty: bool,
    /// The account to become (needs privilege); `None` runs as this process's own user, in the
    /// directory the `Command` names.
    pub switch_to: Option<Account>,
}

/// Registers `setup` to run in the child after `fork`, before `exec`.
///
/// The account switch happens here, in the order that works for an unprivileged target:
/// supplementary groups, then the primary group, then the user (std's `Command::uid` would
/// switch the user before this hook runs, after which `setgroups` is refused). The child then
/// proves it cannot regain root, and changes to the account's home directory as that account
/// (falling back to `/`, as OpenSSH does, when the home is missing or unreadable to it).
pub fn prepare_child(cmd: &mut std::process::Command, setup: ChildSetup) {
    let switch = setup.switch_to.as_ref().map(|a| {
        let home = std::ffi::CString::new(a.home.as_bytes())
            .unwrap_or_else(|_| std::ffi::CString::from(c"/"));
        (a.uid, a.gid, a.groups.clone(), home)
    });
    let (new_session, controlling_tty) = (setup.new_session, setup.controlling_tty);
    // SAFETY: the closure runs in the forked child before exec. It only calls async-signal-safe
    // functions (setsid, ioctl, setgroups, setgid, setuid, chdir) on data prepared before the
    // fork (`groups` and `home` are moved in and not reallocated) and returns errors through
    // `io::Error::last_os_error`/`from_raw_os_error`, which do not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if new_session && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid, groups, home)) = &switch {
                become_account(*uid, *gid, groups)?;
                if libc::chdir(home.as_ptr()) < 0 && libc::chdir(c"/".as_ptr()) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `signal` to process `pid`'s process group when it leads one, else to the process.
pub fn signal_process(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill takes plain integers; a stale pid at worst signals nothing (ESRCH).
    let rc = unsafe { libc::kill(pid, signal) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_opens_and_resizes() {
        let p = open_pty(WindowSize {
            cols: 80,
            rows: 24,
            ..Default::default()
        })
        .unwrap();
        set_window_size(
            &p.master,
            WindowSize {
                cols: 132,
                rows: 50,
                ..Default::default()
            },
        )
        .unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        let rc = unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (132, 50));
    }
}
