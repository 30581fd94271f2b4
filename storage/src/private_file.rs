//! Files only the appliance's own account may read: the backend (which holds the CA keys) and
//! the audit log. This module owns making such a file `0600` from the moment it exists, and
//! tightening one an older release left readable; it never changes a file's contents.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::StorageError;

/// The mode of every file this crate creates.
pub const PRIVATE_MODE: u32 = 0o600;

/// Makes sure `path` exists with mode `0600` before a database engine opens it: a new file is
/// created empty with that mode (never briefly wider), an existing one is narrowed to it.
pub(crate) fn ensure_private(path: &Path) -> Result<(), StorageError> {
    let io_err = |source: io::Error| StorageError::Io {
        path: path.to_owned(),
        source,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
            if mode != PRIVATE_MODE {
                fs::set_permissions(path, Permissions::from_mode(PRIVATE_MODE)).map_err(io_err)?;
            }
            Ok(())
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_private_and_old_ones_are_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        ensure_private(&new).unwrap();
        assert_eq!(
            fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let old = dir.path().join("old.db");
        fs::write(&old, b"kept").unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        ensure_private(&old).unwrap();
        assert_eq!(
            fs::metadata(&old).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&old).unwrap(), b"kept");
    }
}
