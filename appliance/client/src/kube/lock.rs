//! A lock file taken by creating it exclusively (`PATH.lock`), as kubectl locks its kubeconfig:
//! what keeps two `hop kube` processes (or `hop` and kubectl) from writing the same files at
//! once. Released when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists: another program is writing (remove it if none is)")]
    Held { path: String },
}

#[derive(Debug)]
pub struct FileLock(PathBuf);

impl FileLock {
    /// Takes `PATH.lock`, waiting up to `wait` for another holder to let it go.
    pub fn take(path: &Path, wait: Duration) -> Result<Self, LockError> {
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => return Ok(Self(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && waited < wait => {
                    std::thread::sleep(step);
                    waited += step;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(LockError::Held {
                        path: lock.display().to_string(),
                    });
                }
                Err(source) => {
                    return Err(LockError::Create {
                        path: lock.display().to_string(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config");
        let first = FileLock::take(&f, Duration::ZERO).unwrap();
        assert!(dir.path().join("config.lock").exists());
        let e = FileLock::take(&f, Duration::from_millis(120)).unwrap_err();
        assert!(e.to_string().contains("config.lock exists"), "{e}");
        drop(first);
        assert!(!dir.path().join("config.lock").exists());
        let _again = FileLock::take(&f, Duration::ZERO).unwrap();
    }
}
