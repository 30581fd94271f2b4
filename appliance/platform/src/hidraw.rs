//! FIDO security keys on Linux's hidraw: which `/dev/hidraw*` devices are FIDO (their HID report
//! descriptor names usage page 0xF1D0), and one such device opened for 64-byte reports, read
//! with a timeout (`poll(2)`). No libudev or libusb: sysfs and the device node only. The CTAPHID
//! framing and CTAP2 messages that travel in the reports are `hop-webauthn`'s `ctap`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The size of a FIDO HID report.
pub const REPORT: usize = 64;

/// Whether a HID report descriptor declares the FIDO Alliance usage page (0xF1D0): the first
/// Usage Page item of its top-level collection.
#[must_use]
pub fn is_fido_descriptor(descriptor: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&prefix) = descriptor.get(i) {
        if prefix == 0xfe {
            // A long item: its data size is the next byte.
            let size = descriptor.get(i + 1).map_or(0, |s| usize::from(*s));
            i += 3 + size;
            continue;
        }
        let size = match prefix & 0x03 {
            3 => 4,
            s => usize::from(s),
        };
        let Some(data) = descriptor.get(i + 1..i + 1 + size) else {
            return false;
        };
        // Global item, tag Usage Page.
        if prefix & 0xfc == 0x04 {
            let mut value = 0u32;
            for (n, b) in data.iter().enumerate() {
                value |= u32::from(*b) << (8 * n);
            }
            return value == 0xf1d0;
        }
        i += 1 + size;
    }
    false
}

/// The FIDO devices under `/dev` that sysfs lists, by name order.
#[must_use]
pub fn fido_devices() -> Vec<PathBuf> {
    fido_devices_in(Path::new("/sys/class/hidraw"), Path::new("/dev"))
}

fn fido_devices_in(sys: &Path, dev: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read(e.path().join("device/report_descriptor"))
                .is_ok_and(|d| is_fido_descriptor(&d))
        })
        .map(|e| dev.join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// One hidraw device opened for reading and writing reports.
#[derive(Debug)]
pub struct HidDevice {
    file: File,
    path: PathBuf,
}

impl HidDevice {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one output report (report id 0, then the 64 bytes).
    pub fn write_report(&mut self, report: &[u8; REPORT]) -> io::Result<()> {
        let mut buf = [0u8; REPORT + 1];
        buf[1..].copy_from_slice(report);
        self.file.write_all(&buf)
    }

    /// Reads one input report, or `None` when none came within `timeout`.
    pub fn read_report(&mut self, timeout: Duration) -> io::Result<Option<[u8; REPORT]>> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one valid pollfd on the stack for the duration of the call, and the
        // count passed is 1; the fd is open, owned by `self.file`.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(None);
        }
        let mut buf = [0u8; REPORT];
        let got = self.file.read(&mut buf)?;
        if got < REPORT {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("a short HID report ({got} bytes)"),
            ));
        }
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fido_descriptors_are_told_apart() {
        // A YubiKey's FIDO interface begins: Usage Page (0xF1D0), Usage (0x01), Collection.
        let fido = [0x06, 0xd0, 0xf1, 0x09, 0x01, 0xa1, 0x01, 0x09, 0x20];
        assert!(is_fido_descriptor(&fido));
        // A keyboard: Usage Page (Generic Desktop), Usage (Keyboard).
        assert!(!is_fido_descriptor(&[0x05, 0x01, 0x09, 0x06, 0xa1, 0x01]));
        // Every prefix of the FIDO one is no device, never a panic.
        for n in 0..3 {
            assert!(!is_fido_descriptor(&fido[..n]), "{n}");
        }
        assert!(!is_fido_descriptor(&[0xfe, 0xff]));
        assert!(!is_fido_descriptor(&[]));
    }

    #[test]
    fn devices_are_listed_from_sysfs() {
        let dir = tempfile_dir();
        for (name, desc) in [
            ("hidraw0", vec![0x05, 0x01, 0x09, 0x06]),
            ("hidraw3", vec![0x06, 0xd0, 0xf1, 0x09, 0x01]),
        ] {
            let d = dir.join("sys").join(name).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("report_descriptor"), desc).unwrap();
        }
        let found = fido_devices_in(&dir.join("sys"), Path::new("/dev"));
        assert_eq!(found, vec![PathBuf::from("/dev/hidraw3")]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        let d = std::env::temp_dir().join(format!("hop-hidraw-{}", u64::from_le_bytes(b)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
