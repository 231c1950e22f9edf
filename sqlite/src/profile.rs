//! The connection profile every connection gets when it is opened, so no connection of the
//! pool ever runs without it.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::SqliteError;

/// How long a statement waits for a lock held by another connection (another process, or a
/// reader checkpointing) before failing with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection with only the busy timeout set: enough to read the schema version of a
/// database without changing anything in it.
pub(crate) fn connect(name: &'static str, path: &Path) -> Result<Connection, SqliteError> {
    let open = |source| SqliteError::Open {
        name,
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    Ok(conn)
}

/// Applies the profile: WAL journaling (an error when SQLite cannot switch to it), foreign
/// keys, `synchronous=NORMAL` (durable at each checkpoint, safe against corruption in WAL
/// mode), and the busy timeout.
pub(crate) fn apply(name: &'static str, path: &Path, conn: &Connection) -> Result<(), SqliteError> {
    let open = |source| SqliteError::Open {
        name,
        path: path.to_owned(),
        source,
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::NotWal {
            name,
            path: path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open)?;
    Ok(())
}

/// Opens a connection with the full profile.
pub(crate) fn open(name: &'static str, path: &Path) -> Result<Connection, SqliteError> {
    let conn = connect(name, path)?;
    apply(name, path, &conn)?;
    Ok(conn)
}
