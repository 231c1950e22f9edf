//! Versioned schema migrations.
//!
//! A service's [`Schema`] is an ordered list of [`Migration`]s; migration number `i` (the
//! first is number one) leads from schema version `i - 1` to `i`, and `PRAGMA user_version`
//! records how many a database has. On open, the missing steps run in order, **each in its own `BEGIN IMMEDIATE`
//! transaction together with the new `user_version`**, so a failing step leaves the database
//! at the version before it, and two processes opening one file at once never apply a step
//! twice (the second re-reads the version once it holds the write lock).
//!
//! Rules for the lists (`sqlite/README.md` repeats them):
//! - Never edit or reorder a released step: append a new one.
//! - Step 1 of each service adopts the databases written before versioning: it uses
//!   `CREATE ... IF NOT EXISTS` with the exact schema of that time, so a file that already has
//!   the tables only gets its version recorded.
//! - A step runs inside a transaction with foreign keys on; `PRAGMA foreign_keys` cannot be
//!   changed there, so a step that rebuilds a table must keep its references valid.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::SqliteError;

/// One step of a schema's history.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// What the step does, for errors and logs ("add the vms.note column").
    pub description: &'static str,
    /// The change.
    pub step: Step,
}

/// How a [`Migration`] changes the database.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// SQL statements, run as one batch.
    Sql(&'static str),
    /// Rust code, for changes SQL alone cannot express (rewriting values row by row).
    Rust(fn(&Transaction<'_>) -> rusqlite::Result<()>),
}

/// A service's database: its name in messages and its migrations, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The database's name in messages ("vm", "lease", "registry").
    pub name: &'static str,
    /// Every step since the first, oldest first; never edited once released.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The schema version this binary writes: the number of migrations.
    pub fn version(&self) -> u32 {
        u32::try_from(self.migrations.len()).unwrap_or(u32::MAX)
    }
}

/// A database's `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Refuses a database whose version this binary does not know (newer, or negative).
pub(crate) fn check_known(schema: &Schema, path: &Path, found: i64) -> Result<(), SqliteError> {
    let known = schema.version();
    if found < 0 || found > i64::from(known) {
        return Err(SqliteError::TooNew {
            name: schema.name,
            path: path.to_owned(),
            found,
            known,
        });
    }
    Ok(())
}

/// Applies the migrations `conn`'s database lacks; returns how many were applied here.
pub(crate) fn migrate(
    conn: &mut Connection,
    schema: &Schema,
    path: &Path,
) -> Result<u32, SqliteError> {
    let sql = |step: &'static str| {
        move |source| SqliteError::Sql {
            name: schema.name,
            step,
            source,
        }
    };
    let mut applied = 0;
    for (version, m) in (1u32..).zip(schema.migrations) {
        let found = user_version(conn).map_err(sql("reading the schema version"))?;
        check_known(schema, path, found)?;
        if i64::from(version) <= found {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a migration"))?;
        // Another process may have migrated while this one waited for the write lock.
        let found = user_version(&tx).map_err(sql("reading the schema version"))?;
        check_known(schema, path, found)?;
        if i64::from(version) <= found {
            continue;
        }
        let failed = |source| SqliteError::Migrate {
            name: schema.name,
            path: path.to_owned(),
            version,
            description: m.description,
            source: Box::new(source),
        };
        match m.step {
            Step::Sql(batch) => tx.execute_batch(batch),
            Step::Rust(f) => f(&tx),
        }
        .and_then(|()| tx.pragma_update(None, "user_version", version))
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        applied += 1;
    }
    Ok(applied)
}
