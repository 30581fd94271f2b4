//! The user's terminal in raw mode, for `hop play`'s keys (space, q): no line buffering, no
//! echo, no signals from the keyboard; restored when the guard is dropped.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// A terminal in raw mode until this is dropped.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Puts the terminal `fd` refers to in raw mode. `fd` must stay open while the guard lives.
    pub fn enable(fd: &impl AsRawFd) -> io::Result<Self> {
        let fd = fd.as_raw_fd();
        // SAFETY: an all-zero termios is a valid value of this plain C struct; tcgetattr then
        // fills it in.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is an open descriptor borrowed from the caller; `saved` is a valid,
        // writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios; cfmakeraw only changes its flags.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `fd` is open; `raw` is a valid termios read back from the same terminal.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `fd` is still open (the caller's promise) and `saved` is the settings
        // tcgetattr returned for it.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}
