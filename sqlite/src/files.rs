//! Creating the database file owner-only before SQLite opens it.
//!
//! SQLite creates the `-wal` and `-shm` files with the database file's permissions, so a
//! database made 0600 here keeps all three closed to other users whatever the process umask.
//! Existing paths are left as they are: each service repairs its tree at start-up
//! (`banger_bus::private::secure_and_warn`).

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::SqliteError;

/// Mode of the directories created for a database (as `banger_bus::private::DIR_MODE`).
pub const DIR_MODE: u32 = 0o700;
/// Mode of a database file created here (as `banger_bus::private::FILE_MODE`).
pub const FILE_MODE: u32 = 0o600;

/// Creates `path`'s missing parent directories mode 0700 and `path` itself mode 0600 when it
/// does not exist; an existing file keeps its content.
///
/// # Errors
/// [`SqliteError::Create`] naming the path that could not be created.
pub fn create_owner_only(name: &'static str, path: &Path) -> Result<(), SqliteError> {
    let fail = |p: &Path| {
        let p = p.to_owned();
        move |source| SqliteError::Create {
            name,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(fail(dir))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
        .map_err(fail(path))
}
