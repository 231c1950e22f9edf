//! The shared layer against real SQLite files: owner-only creation, the profile on every
//! connection, migrations step by step, refusal of newer databases, serialised writers.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use banger_sqlite::rusqlite::{self, Transaction};
use banger_sqlite::{Db, Migration, Schema, SqliteError, Step};

const V1: Migration = Migration {
    description: "create the notes table",
    step: Step::Sql(
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    ),
};
const V2: Migration = Migration {
    description: "add notes.words",
    step: Step::Sql("ALTER TABLE notes ADD COLUMN words INTEGER;"),
};
fn count_words(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(i64, String)> = tx
        .prepare("SELECT id, body FROM notes")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, body) in rows {
        let n = i64::try_from(body.split_whitespace().count()).unwrap();
        tx.execute("UPDATE notes SET words = ?2 WHERE id = ?1", (id, n))?;
    }
    Ok(())
}
const V3: Migration = Migration {
    description: "count the words of every note",
    step: Step::Rust(count_words),
};
const BROKEN: Migration = Migration {
    description: "a step that fails half-way",
    step: Step::Sql("CREATE TABLE half (x INTEGER); INSERT INTO nowhere VALUES (1);"),
};

const SCHEMA_1: Schema = Schema {
    name: "notes",
    migrations: &[V1],
};
const SCHEMA_3: Schema = Schema {
    name: "notes",
    migrations: &[V1, V2, V3],
};
const SCHEMA_BROKEN: Schema = Schema {
    name: "notes",
    migrations: &[V1, BROKEN],
};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn add_note(db: &Db, body: &str) {
    let body = body.to_owned();
    db.write(|tx| {
        tx.execute("INSERT INTO notes (body) VALUES (?1)", [body])
            .map_err(|source| SqliteError::Sql {
                name: "notes",
                step: "test insert",
                source,
            })
    })
    .unwrap();
}

fn query<T: rusqlite::types::FromSql>(db: &Db, sql: &str) -> Vec<T> {
    db.read(|c| {
        let mut stmt = c.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        Ok::<_, SqliteError>(rows.map(Result::unwrap).collect())
    })
    .unwrap()
}

#[test]
fn a_new_database_is_owner_only_and_at_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    // The test keeps its ordinary umask (022): the modes come from the layer.
    let path = dir.path().join("state/svc/notes.db");
    let db = Db::open(&path, &SCHEMA_3).unwrap();
    add_note(&db, "one two");
    assert_eq!(db.schema_version().unwrap(), 3);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    for f in ["notes.db", "notes.db-wal", "notes.db-shm"] {
        assert_eq!(mode(&path.with_file_name(f)), 0o600, "{f}");
    }
}

#[test]
fn every_connection_has_the_profile_the_writer_and_each_pooled_reader() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("n.db"), &SCHEMA_1).unwrap();
    let profile = |c: &rusqlite::Connection| -> Vec<String> {
        [
            "journal_mode",
            "foreign_keys",
            "synchronous",
            "busy_timeout",
        ]
        .iter()
        .map(|p| {
            c.pragma_query_value(None, p, |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
            })
            .unwrap()
        })
        .collect()
    };
    let want = ["wal", "1", "1", "5000"];
    assert_eq!(
        db.write(|tx| Ok::<_, SqliteError>(profile(tx))).unwrap(),
        want
    );
    // Readers held at once force several connections into the pool.
    let barrier = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    db.read(|c| {
                        barrier.wait();
                        Ok::<_, SqliteError>(profile(c))
                    })
                    .unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
    });
    assert_eq!(db.pragma("foreign_keys").unwrap(), "1");
}

#[test]
fn an_older_database_is_migrated_step_by_step_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    {
        let db = Db::open(&path, &SCHEMA_1).unwrap();
        add_note(&db, "hello brave new world");
        add_note(&db, "bye");
        assert_eq!(db.schema_version().unwrap(), 1);
    }
    let db = Db::open(&path, &SCHEMA_3).unwrap();
    assert_eq!(db.schema_version().unwrap(), 3);
    assert_eq!(
        query::<String>(&db, "SELECT body FROM notes ORDER BY id"),
        ["hello brave new world", "bye"]
    );
    assert_eq!(
        query::<i64>(&db, "SELECT words FROM notes ORDER BY id"),
        [4, 1]
    );
    // Reopening applies nothing more.
    drop(db);
    let db = Db::open(&path, &SCHEMA_3).unwrap();
    assert_eq!(query::<i64>(&db, "SELECT count(*) FROM notes"), [2]);
}

#[test]
fn a_failing_step_is_rolled_back_and_the_database_keeps_the_version_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    let err = Db::open(&path, &SCHEMA_BROKEN).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SqliteError::Migrate { version: 2, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("to schema version 2 (a step that fails half-way)"),
        "{msg}"
    );
    // Step 1 stays applied; nothing of step 2 (its first statement worked) is left.
    let db = Db::open(&path, &SCHEMA_1).unwrap();
    assert_eq!(db.schema_version().unwrap(), 1);
    assert_eq!(
        query::<i64>(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'half'"
        ),
        [0]
    );
}

#[test]
fn a_database_from_a_newer_binary_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    {
        let db = Db::open(&path, &SCHEMA_3).unwrap();
        add_note(&db, "written by the future");
    }
    let before = std::fs::read(&path).unwrap();
    let err = Db::open(&path, &SCHEMA_1).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SqliteError::TooNew {
                found: 3,
                known: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("schema version 3, but this binary knows versions up to 1")
            && msg.contains("newer banger")
            && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
    let db = Db::open(&path, &SCHEMA_3).unwrap();
    assert_eq!(
        query::<String>(&db, "SELECT body FROM notes"),
        ["written by the future"]
    );
}

#[test]
fn a_rollback_journal_database_from_a_newer_binary_is_not_switched_to_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1); PRAGMA user_version = 7;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        Db::open(&path, &SCHEMA_3),
        Err(SqliteError::TooNew { found: 7, .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn writers_take_turns_so_no_increment_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("n.db"), &SCHEMA_1).unwrap();
    add_note(&db, "0");
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    db.write(|tx| {
                        let n: i64 = tx
                            .query_row("SELECT body FROM notes WHERE id = 1", [], |r| {
                                r.get::<_, String>(0)
                            })
                            .map(|b| b.parse().unwrap())
                            .unwrap();
                        tx.execute(
                            "UPDATE notes SET body = ?1 WHERE id = 1",
                            [(n + 1).to_string()],
                        )
                        .unwrap();
                        Ok::<_, SqliteError>(())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(query::<String>(&db, "SELECT body FROM notes"), ["200"]);
}

#[test]
fn a_failed_write_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("n.db"), &SCHEMA_1).unwrap();
    #[derive(Debug)]
    struct Refused;
    impl From<SqliteError> for Refused {
        fn from(_: SqliteError) -> Self {
            Self
        }
    }
    let r = db.write(|tx| {
        tx.execute("INSERT INTO notes (body) VALUES ('x')", [])
            .unwrap();
        Err::<(), _>(Refused)
    });
    assert!(r.is_err());
    assert_eq!(query::<i64>(&db, "SELECT count(*) FROM notes"), [0]);
}

#[test]
fn two_handles_opening_a_new_file_at_once_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    std::thread::scope(|s| {
        let a = s.spawn(|| Db::open(&path, &SCHEMA_3).map(drop));
        let b = s.spawn(|| Db::open(&path, &SCHEMA_3).map(drop));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    let db = Db::open(&path, &SCHEMA_3).unwrap();
    assert_eq!(db.schema_version().unwrap(), 3);
}

#[tokio::test]
async fn async_calls_run_on_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("n.db"), &SCHEMA_1).unwrap();
    db.write_async(|tx| {
        tx.execute("INSERT INTO notes (body) VALUES ('a')", [])
            .map_err(|source| SqliteError::Sql {
                name: "notes",
                step: "test",
                source,
            })
    })
    .await
    .unwrap();
    let n = db
        .read_async(|c| {
            c.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0))
                .map_err(|source| SqliteError::Sql {
                    name: "notes",
                    step: "test",
                    source,
                })
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
}
