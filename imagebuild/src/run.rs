//! Running the build's tools so that Ctrl-C can stop them at once.
//!
//! Each tool runs in a process group of its own (so the terminal's SIGINT reaches only the
//! `banger` process, which decides what to do) and is registered with the build's [`Cancel`]
//! while it runs: cancelling SIGKILLs the whole group. Tools that mount anything (debootstrap
//! mounts `/proc` and `/sys` in the target) run inside `unshare --mount --propagation private`,
//! so their mounts exist only in a namespace that dies with them: a killed build leaves no
//! mount behind, whatever the tool was doing.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::{BuildError, Stage};

/// How many lines of a failed tool's output an error carries.
const TAIL_LINES: usize = 15;

/// Cancels a build from another thread (the CLI's Ctrl-C handler).
#[derive(Debug, Default)]
pub struct Cancel {
    cancelled: AtomicBool,
    /// The process group of the tool running now.
    running: Mutex<Option<i32>>,
}

impl Cancel {
    /// A build that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: the running tool's process group is killed, and the build unwinds at the next
    /// step.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Ok(running) = self.running.lock()
            && let Some(pgid) = *running
        {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    /// Whether the build was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Errors with [`BuildError::Cancelled`] when cancelled.
    pub(crate) fn check(&self) -> Result<(), BuildError> {
        if self.is_cancelled() {
            Err(BuildError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn set_running(&self, pgid: Option<i32>) {
        if let Ok(mut r) = self.running.lock() {
            *r = pgid;
        }
    }
}

/// Runs `cmd` to completion in a process group of its own, its output captured. Returns its
/// stdout; a failure carries the last lines of its output.
pub(crate) fn run(cancel: &Cancel, stage: Stage, cmd: &mut Command) -> Result<String, BuildError> {
    cancel.check()?;
    let what = describe(cmd);
    let mut out = tempfile::tempfile()
        .map_err(|e| BuildError::stage(stage, format!("creating a log file: {e}")))?;
    let mut err = tempfile::tempfile()
        .map_err(|e| BuildError::stage(stage, format!("creating a log file: {e}")))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            out.try_clone()
                .map_err(|e| BuildError::stage(stage, e.to_string()))?,
        ))
        .stderr(Stdio::from(
            err.try_clone()
                .map_err(|e| BuildError::stage(stage, e.to_string()))?,
        ))
        .process_group(0)
        .spawn()
        .map_err(|e| BuildError::stage(stage, format!("running {what}: {e}")))?;
    let pgid = i32::try_from(child.id()).ok();
    cancel.set_running(pgid);
    // A cancel between spawn and registration would have missed the child.
    if cancel.is_cancelled()
        && let Some(pg) = pgid
    {
        let _ = killpg(Pid::from_raw(pg), Signal::SIGKILL);
    }
    // Wait for the tool to exit but leave it unreaped: while its zombie holds the pid, the
    // group id cannot name anyone else, so the kills below (and a Ctrl-C meanwhile) can only
    // reach the tool's own group.
    if let Some(pg) = pgid {
        let _ = waitid(
            Id::Pid(Pid::from_raw(pg)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        );
    }
    cancel.set_running(None);
    // Whatever the tool left running in its group (debootstrap's helpers) goes with it.
    if let Some(pg) = pgid {
        let _ = killpg(Pid::from_raw(pg), Signal::SIGKILL);
    }
    let status = child.wait();
    cancel.check()?;
    let status =
        status.map_err(|e| BuildError::stage(stage, format!("waiting for {what}: {e}")))?;
    let stdout = read_all(&mut out);
    if status.success() {
        return Ok(stdout);
    }
    let stderr = read_all(&mut err);
    Err(BuildError::stage(
        stage,
        format!(
            "{what} failed ({status}); its last output:\n{}",
            tail(&format!("{stdout}{stderr}"), TAIL_LINES)
        ),
    ))
}

/// `program arg...`, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args().take(4) {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if cmd.get_args().len() > 4 {
        s.push_str(" ...");
    }
    s
}

fn read_all(f: &mut std::fs::File) -> String {
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last `n` non-empty lines of `text`, indented.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_failing_tool_reports_its_last_lines() {
        let e = run(
            &Cancel::new(),
            Stage::Customise,
            Command::new("sh").args(["-c", "echo one; echo two >&2; exit 3"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("customise: sh -c"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("  one\n  two"), "{e}");
    }

    #[test]
    fn output_is_returned_on_success() {
        let out = run(
            &Cancel::new(),
            Stage::Verify,
            Command::new("echo").arg("hi"),
        )
        .unwrap();
        assert_eq!(out, "hi\n");
    }

    #[test]
    fn cancelling_kills_the_running_tool_at_once() {
        let cancel = Arc::new(Cancel::new());
        let c = Arc::clone(&cancel);
        let worker = std::thread::spawn(move || {
            run(&c, Stage::Debootstrap, Command::new("sleep").arg("60"))
        });
        // Wait until the tool is registered, then cancel.
        banger_testkit::wait_until_blocking("the tool to start", Duration::from_secs(10), || {
            cancel.running.lock().is_ok_and(|r| r.is_some())
        });
        cancel.cancel();
        let r = worker.join().unwrap();
        assert!(matches!(r, Err(BuildError::Cancelled)), "{r:?}");
        // A cancelled build runs nothing more.
        assert!(matches!(
            run(&cancel, Stage::Verify, &mut Command::new("true")),
            Err(BuildError::Cancelled)
        ));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "  b\n  c");
        assert_eq!(tail("", 3), "");
    }
}
