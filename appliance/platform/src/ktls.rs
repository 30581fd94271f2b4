//! Kernel TLS (Linux `CONFIG_TLS`): detecting it, handing a connection's TLS 1.3 keys to the
//! kernel, and the records that are not application data.
//!
//! Once a socket has the `tls` upper-layer protocol with TX and RX keys, the kernel seals what is
//! written and opens what is read, so a relay can `splice` between two such sockets without the
//! bytes entering user space. Records of other types (alerts, post-handshake messages) do not
//! come out of `read`/`splice` (they fail with `EIO`/`EINVAL`); [`recv_control`] takes one with
//! its type, and [`send_close_notify`] writes an alert record.
//!
//! Detection ([`probe`]) attaches the ULP to a connected loopback socket at start-up: kernels
//! without `CONFIG_TLS` (these build machines) fail it, and the relay then seals records in user
//! space instead.

use std::io;
use std::os::fd::AsRawFd;

/// Why kernel TLS cannot be used here: the probe's loopback connection failed (the host's
/// network is odd), or the kernel refused the `tls` ULP (no `CONFIG_TLS`, the common case).
#[derive(Debug, thiserror::Error)]
pub enum KtlsUnavailable {
    #[error("cannot open a loopback probe socket: {0}")]
    Bind(#[source] io::Error),
    #[error("loopback probe socket: {0}")]
    LocalAddr(#[source] io::Error),
    #[error("cannot connect the loopback probe socket: {0}")]
    Connect(#[source] io::Error),
    #[error("loopback probe accept: {0}")]
    Accept(#[source] io::Error),
    #[error("setsockopt(TCP_ULP, \"tls\"): {0}")]
    KernelRefused(#[source] io::Error),
}

/// Why kernel TLS cannot be used here, or `Ok` when it can.
pub fn probe() -> Result<(), KtlsUnavailable> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(KtlsUnavailable::Bind)?;
    let addr = listener.local_addr().map_err(KtlsUnavailable::LocalAddr)?;
    let client = std::net::TcpStream::connect(addr).map_err(KtlsUnavailable::Connect)?;
    let (_server, _) = listener.accept().map_err(KtlsUnavailable::Accept)?;
    attach_ulp(&client).map_err(KtlsUnavailable::KernelRefused)
}

/// A cipher the kernel implements for TLS 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelCipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// One direction's key material for the kernel.
pub struct KernelKey<'a> {
    pub cipher: KernelCipher,
    pub key: &'a [u8],
    /// The 12-byte IV of RFC 8446 §5.3.
    pub iv: &'a [u8; 12],
    /// The next record's sequence number.
    pub seq: u64,
}

fn attach_ulp(sock: &impl AsRawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: `sock` owns an open TCP socket for the duration of the call; the option value is
    // the 3 bytes of `name`, valid for reads, and its length is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_tls_opt<T>(sock: &impl AsRawFd, direction: libc::c_int, info: &T) -> io::Result<()> {
    // SAFETY: `info` is a fully initialised `repr(C)` crypto-info struct from libc, valid for
    // reads of `size_of::<T>()` bytes for the duration of the call; `sock` owns an open socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TLS,
            direction,
            (info as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_key(sock: &impl AsRawFd, direction: libc::c_int, k: &KernelKey<'_>) -> io::Result<()> {
    let bad_key = || io::Error::new(io::ErrorKind::InvalidInput, "key of the wrong length");
    let rec_seq = k.seq.to_be_bytes();
    let (salt, explicit) = k.iv.split_at(4);
    let version = libc::TLS_1_3_VERSION;
    match k.cipher {
        KernelCipher::Aes128Gcm => {
            let info = libc::tls12_crypto_info_aes_gcm_128 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_128,
                },
                iv: explicit.try_into().map_err(|_| bad_key())?,
                key: k.key.try_into().map_err(|_| bad_key())?,
                salt: salt.try_into().map_err(|_| bad_key())?,
                rec_seq,
            };
            set_tls_opt(sock, direction, &info)
        }
        KernelCipher::Aes256Gcm => {
            let info = libc::tls12_crypto_info_aes_gcm_256 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_256,
                },
                iv: explicit.try_into().map_err(|_| bad_key())?,
                key: k.key.try_into().map_err(|_| bad_key())?,
                salt: salt.try_into().map_err(|_| bad_key())?,
                rec_seq,
            };
            set_tls_opt(sock, direction, &info)
        }
        KernelCipher::Chacha20Poly1305 => {
            let info = libc::tls12_crypto_info_chacha20_poly1305 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                },
                iv: *k.iv,
                key: k.key.try_into().map_err(|_| bad_key())?,
                salt: [],
                rec_seq,
            };
            set_tls_opt(sock, direction, &info)
        }
    }
}

/// Hands a connection's keys to the kernel: from now on `write` seals and `read` opens records.
pub fn enable(sock: &impl AsRawFd, tx: &KernelKey<'_>, rx: &KernelKey<'_>) -> io::Result<()> {
    attach_ulp(sock)?;
    set_key(sock, libc::TLS_TX, tx)?;
    set_key(sock, libc::TLS_RX, rx)
}

/// TLS record content types.
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;

/// Takes the next record, which must be a non-application-data one, from a kernel TLS socket:
/// its content type and plaintext (at most `buf.len()` bytes). Does not block.
pub fn recv_control(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    // Room for one cmsghdr carrying one byte, aligned as the kernel wants.
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: `msg` points at `iov` (describing `buf`, writable for its length) and at `cbuf`
    // (writable for its size); all three outlive the call; `sock` owns an open socket.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut record_type = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled, within
    // `msg_controllen`; the data pointer of a SOL_TLS/TLS_GET_RECORD_TYPE message holds one byte.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                record_type = Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let record_type = record_type.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "record without a TLS record type",
        )
    })?;
    Ok((record_type, usize::try_from(n).unwrap_or(0)))
}

/// Writes a `close_notify` alert record on a kernel TLS socket (the kernel seals it).
pub fn send_close_notify(sock: &impl AsRawFd) -> io::Result<()> {
    let mut alert = [1u8, 0];
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: alert.as_mut_ptr().cast(),
        iov_len: alert.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as _;
    // SAFETY: the control buffer is 64 bytes, more than CMSG_SPACE(1); CMSG_FIRSTHDR returns its
    // start, and one byte of data fits behind the header.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = ALERT;
    }
    // SAFETY: `msg` points at `iov` (the two alert bytes) and `cbuf`, both alive for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_either_way() {
        // These build machines have no CONFIG_TLS: the probe must say so, not fail to run.
        match probe() {
            Ok(()) => eprintln!("kernel TLS is available here"),
            Err(e) => assert!(e.to_string().contains("TCP_ULP"), "{e}"),
        }
    }
}
