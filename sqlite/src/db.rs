//! The database handle: one writer connection behind a mutex, a small pool of readers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::migrate::{check_known, migrate, user_version};
use crate::{Schema, SqliteError, files, profile};

/// Reader connections kept open for reuse. A read that finds the pool empty opens a connection
/// (a file open and the profile's pragmas); with 4, a burst of 100 concurrent requests opened
/// and closed ~96 connections, so the pool is sized for such bursts.
const READER_POOL: usize = 32;

struct Inner {
    name: &'static str,
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// An open, migrated database. Cheap to clone; all clones share the connections.
///
/// Calls block: from async code use [`Db::read_async`] and [`Db::write_async`], which run on
/// the blocking thread pool.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the database at `path`, creating it (0600, in 0700 directories) when missing,
    /// and brings it to `schema`'s version. Blocks.
    ///
    /// # Errors
    /// [`SqliteError::TooNew`] when the file was written by a newer binary (the file is left as it
    /// was: its version is read before anything is written); [`SqliteError::Migrate`] when a step
    /// fails (the database keeps the version before that step); [`SqliteError::Create`],
    /// [`SqliteError::Open`], [`SqliteError::NotWal`] when the file cannot be made or configured.
    pub fn open(path: &Path, schema: &Schema) -> Result<Self, SqliteError> {
        let name = schema.name;
        files::create_owner_only(name, path)?;
        let mut writer = profile::connect(name, path)?;
        let found = user_version(&writer).map_err(|source| SqliteError::Open {
            name,
            path: path.to_owned(),
            source,
        })?;
        check_known(schema, path, found)?;
        profile::apply(name, path, &writer)?;
        migrate(&mut writer, schema, path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a pooled reader connection. Readers see the last committed state and
    /// never wait for the writer. Blocks.
    ///
    /// # Errors
    /// `f`'s error, or [`SqliteError::Open`] when a new pooled connection cannot be opened.
    pub fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<SqliteError>,
    {
        let inner = &self.inner;
        let pooled = inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => profile::open(inner.name, &inner.path)?,
        };
        let result = f(&conn);
        let mut pool = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        result
    }

    /// Runs `f` in a write transaction and commits it when `f` succeeds (rolls it back when
    /// it fails). Writers of this process take turns on the one writer connection; the
    /// transaction is `BEGIN IMMEDIATE`, so a writer in another process makes it wait (up to
    /// the busy timeout) instead of failing with `SQLITE_BUSY_SNAPSHOT` between a read and a
    /// write. Blocks.
    ///
    /// # Errors
    /// `f`'s error, or [`SqliteError::Sql`] when the transaction cannot start or commit.
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<SqliteError>,
    {
        self.write_then(f, |_| {})
    }

    /// [`Db::write`], then `committed` with the value once the transaction has committed, while
    /// this process's writer connection is still held: the `committed` calls of successive
    /// writes run in commit order (for handing out what a write numbered, in its order, without
    /// a lock of the caller's own around the whole write). Not called when the write fails.
    ///
    /// # Errors
    /// As [`Db::write`].
    pub fn write_then<T, E>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
        committed: impl FnOnce(&T),
    ) -> Result<T, E>
    where
        E: From<SqliteError>,
    {
        let name = self.inner.name;
        let sql = |step: &'static str| move |source| SqliteError::Sql { name, step, source };
        // A panic inside `f` rolled its transaction back (Transaction's drop), so a poisoned
        // lock still guards a consistent connection.
        let mut conn = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let value = f(&tx)?;
        tx.commit().map_err(sql("committing a write"))?;
        committed(&value);
        drop(conn);
        Ok(value)
    }

    /// [`Db::read`] on the blocking thread pool.
    ///
    /// # Errors
    /// As [`Db::read`], and [`SqliteError::Join`] when the task dies.
    pub async fn read_async<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.read(f))
            .await
            .map_err(|source| SqliteError::Join {
                name: self.inner.name,
                source,
            })?
    }

    /// [`Db::write`] on the blocking thread pool.
    ///
    /// # Errors
    /// As [`Db::write`], and [`SqliteError::Join`] when the task dies.
    pub async fn write_async<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write(f))
            .await
            .map_err(|source| SqliteError::Join {
                name: self.inner.name,
                source,
            })?
    }

    /// [`Db::write_then`] on the blocking thread pool. Once started, the write and `committed`
    /// run to the end even when the caller stops waiting.
    ///
    /// # Errors
    /// As [`Db::write`], and [`SqliteError::Join`] when the task dies.
    pub async fn write_then_async<T, E, F, C>(&self, f: F, committed: C) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_then(f, committed))
            .await
            .map_err(|source| SqliteError::Join {
                name: self.inner.name,
                source,
            })?
    }

    /// The schema version recorded in the file.
    ///
    /// # Errors
    /// [`SqliteError::Sql`] when it cannot be read.
    pub fn schema_version(&self) -> Result<i64, SqliteError> {
        let name = self.inner.name;
        self.read(|c| {
            user_version(c).map_err(|source| SqliteError::Sql {
                name,
                step: "reading the schema version",
                source,
            })
        })
    }

    /// The value of pragma `name` on a pooled reader connection, as text (tests check the
    /// profile with it).
    ///
    /// # Errors
    /// [`SqliteError::Sql`] when the pragma cannot be read.
    pub fn pragma(&self, name: &str) -> Result<String, SqliteError> {
        let db = self.inner.name;
        self.read(|c| {
            pragma_text(c, name).map_err(|source| SqliteError::Sql {
                name: db,
                step: "reading a setting",
                source,
            })
        })
    }
}

/// A pragma's value as text.
pub(crate) fn pragma_text(c: &Connection, name: &str) -> rusqlite::Result<String> {
    c.pragma_query_value(None, name, |r| {
        Ok(match r.get_ref(0)? {
            rusqlite::types::ValueRef::Integer(i) => i.to_string(),
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            other => format!("{other:?}"),
        })
    })
}
