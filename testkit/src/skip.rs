//! Announcing, never hiding, a test that cannot run on this machine.
//!
//! A test that lacks something (root, a program, a kernel feature) calls [`skip`] with the
//! reason and returns. The skip is printed (`SKIPPED <test>: <why>`) and appended to the file
//! named by [`SKIP_LOG_ENV`], where `scripts/test` counts it: cargo reports such a test as
//! passed and hides its output.
//!
//! The test's name is derived, never typed, so it cannot go stale when a test is renamed:
//! libtest runs every test on a thread named after the test's path, as `cargo test` prints it
//! (`tests::a_vm_boots`, `backend::tests::a_real_busy_unlink_is_retried`). That thread is
//! where a test function, the helpers it calls and a `#[tokio::test]` body run (tokio's
//! `block_on` drives the body on the calling thread). Off a test thread (the `main` of a
//! `harness = false` bench, a thread the test spawned) the program's name stands in: the bench
//! target's name, without the hash cargo appends (`netd` for `target/release/deps/netd-1f0c…`).

use std::io::Write as _;
use std::path::Path;

/// The environment variable naming the file where skips are recorded; `scripts/test` sets it
/// and counts the lines, because cargo hides the output of tests that pass.
pub const SKIP_LOG_ENV: &str = "BANGER_SKIP_LOG";

/// Announces that the running test cannot run here and why: printed, and appended to the skip
/// log so the test command's summary counts it as skipped. Return right after calling it.
///
/// Call it on the test's own thread (the test function, a helper it calls, a `#[tokio::test]`
/// body; not a task spawned onto a runtime's workers): the test's name is that thread's
/// name; off a test thread the program's name stands in.
pub fn skip(why: &str) {
    let log = std::env::var_os(SKIP_LOG_ENV);
    record(log.as_deref().map(Path::new), &current_test(), why);
}

/// Returns true when the test may run (we are root); otherwise announces the skip (see
/// [`skip`]) and returns false. Tests that need namespaces, taps, nftables or mounts start with
/// `if !require_root() { return; }`.
pub fn require_root() -> bool {
    if is_root() {
        true
    } else {
        skip("needs root (network namespaces, taps, nftables, mounts or loop devices)");
        false
    }
}

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `program` is on PATH.
pub fn have_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The running test's name: the name of the thread libtest runs it on; off a test thread
/// (unnamed, or `main`), the program's name without cargo's hash suffix.
pub fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => program_name(),
    }
}

/// The running executable's file name without the `-<16 hex digits>` cargo appends to test and
/// bench binaries under `target/<profile>/deps/`.
fn program_name() -> String {
    let exe = std::env::current_exe().ok();
    let name = exe.as_deref().and_then(Path::file_name).map_or_else(
        || "unknown program".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem.to_owned()
        }
        _ => name,
    }
}

/// Prints the skip of `test` and appends it to `log`, when there is one.
fn record(log: Option<&Path>, test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    let Some(log) = log else {
        return;
    };
    // Every parallel test appends one short line with one write; O_APPEND keeps lines whole.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(format!("{test}: {why}\n").as_bytes()));
    if let Err(e) = appended {
        eprintln!(
            "could not record the skip of {test} in {}: {e}",
            log.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`skip`] does, with the log given instead of read from the environment (changing
    /// the environment would race with the other tests of this binary).
    fn skip_to(log: &Path, why: &str) {
        record(Some(log), &current_test(), why);
    }

    #[test]
    fn a_skip_is_recorded_under_the_test_functions_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        skip_to(&log, "needs a unicorn");
        skip_to(&log, "and a second reason");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "skip::tests::a_skip_is_recorded_under_the_test_functions_own_name: needs a unicorn\n\
             skip::tests::a_skip_is_recorded_under_the_test_functions_own_name: and a second \
             reason\n"
        );
    }

    #[tokio::test]
    async fn an_async_test_is_named_after_its_function_too() {
        assert_eq!(
            current_test(),
            "skip::tests::an_async_test_is_named_after_its_function_too"
        );
    }

    #[test]
    fn off_the_test_thread_the_program_name_stands_in_without_cargos_hash() {
        let name = std::thread::spawn(current_test).join().unwrap();
        // This unit-test binary is `target/<profile>/deps/banger_testkit-<hash>`.
        assert_eq!(name, "banger_testkit");
    }
}
