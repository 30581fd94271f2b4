//! Files that hold secrets or identities (keys, certificates, TOTP secrets): created with mode
//! 0600 through a temporary file and a rename, in directories made 0700.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a private file or directory could not be written: the operating system's answer, for
/// the path named (the cause is the error's source).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot chmod {}", path.display())]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing or syncing the temporary file's contents failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub fn ensure_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(dir).map_err(|source| FileError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        FileError::Chmod {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Writes a file with mode 0600 through a temporary file and a rename.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), FileError> {
    // Create a missing parent, but never change the mode of an existing directory the caller
    // named (a --totp-secret-file in /tmp must not make /tmp private).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|source| FileError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|source| FileError::Write {
                path: tmp.clone(),
                source,
            })?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).map_err(|source| FileError::Write {
        path: path.to_path_buf(),
        source,
    })
}
