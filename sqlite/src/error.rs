//! What can go wrong below a service's own store.

use std::path::PathBuf;

/// A failure of the shared SQLite layer. Every variant names the database (the service's
/// [`crate::Schema::name`]) and carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The directory or the file could not be created owner-only.
    #[error("creating {path} for the {name} database")]
    Create {
        /// The database.
        name: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Opening a connection or applying the connection profile failed.
    #[error("opening the {name} database {path}")]
    Open {
        /// The database.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file system refused WAL journaling (concurrent readers and a writer need it).
    #[error(
        "the {name} database {path} cannot use WAL journaling (SQLite kept {mode:?}); \
         put the state directory on a local file system"
    )]
    NotWal {
        /// The database.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The database was written by a newer banger (or holds a version no banger wrote).
    #[error(
        "the {name} database {path} has schema version {found}, but this binary knows \
         versions up to {known}: it was written by a newer banger. Run that version (or \
         restore a backup made by this one); the file was left unchanged"
    )]
    TooNew {
        /// The database.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this binary knows.
        known: u32,
    },
    /// A migration step failed; it was rolled back and the database keeps the version before
    /// it.
    #[error("migrating the {name} database {path} to schema version {version} ({description})")]
    Migrate {
        /// The database.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The version the step leads to.
        version: u32,
        /// What the step does.
        description: &'static str,
        /// The cause (boxed: it keeps this error small enough to return by value).
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// Starting or committing a transaction, or another statement of this layer, failed.
    #[error("the {name} database: {step}")]
    Sql {
        /// The database.
        name: &'static str,
        /// What was being done.
        step: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task running a database call died.
    #[error("the {name} database task failed")]
    Join {
        /// The database.
        name: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}
