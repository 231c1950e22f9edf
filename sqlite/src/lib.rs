//! banger's one SQLite layer, used by every service that keeps a database (vm-controller's
//! `vms.sqlite`, netd's `leases.db`, stord's `stord.db`).
//!
//! [`Db::open`] gives each of them the same guarantees:
//!
//! - **Owner-only files**: the database's directory is created mode 0700 and the file mode 0600
//!   before SQLite opens it, so its `-wal` and `-shm` files (which take the database's mode) are
//!   owner-only too, whatever the process umask ([`files`]; the policy of
//!   `banger_bus::private`).
//! - **One connection profile on every connection**, the writer and each pooled reader alike:
//!   WAL journaling (refused with an error when the file system cannot do it), a 5 s busy
//!   timeout, foreign keys on, `synchronous=NORMAL` ([`profile`]).
//! - **One writer at a time**: [`Db::write`] runs the caller's change in a `BEGIN IMMEDIATE`
//!   transaction on the single writer connection, behind a mutex; readers use a small pool and
//!   never wait for a writer (WAL) ([`db`]).
//! - **Versioned schema migrations**: each service declares a [`Schema`], an ordered list of
//!   [`Migration`]s; the database's `PRAGMA user_version` says how many are applied. Opening
//!   applies the missing ones, each in its own transaction, and refuses a database newer than
//!   the binary with [`SqliteError::TooNew`], leaving the file untouched ([`migrate`]).

pub mod db;
pub mod error;
pub mod files;
pub mod migrate;
pub mod profile;

pub use db::Db;
pub use error::SqliteError;
pub use migrate::{Migration, Schema, Step};
pub use rusqlite;
