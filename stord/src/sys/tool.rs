//! Running e2fsprogs (`mkfs.ext4`, `e2fsck`, `resize2fs`, `debugfs`) with a deadline.
//!
//! These are the file-system tools every distribution ships; banger calls them with fixed
//! arguments (never a shell) and kills one that overruns its deadline, so a wedged tool cannot
//! hold a VM's lock forever.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a running tool is polled for exit.
const POLL: Duration = Duration::from_millis(5);

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct ToolOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ToolOutput {
    /// The exit code, `-1` when killed by a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Why a tool could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started.
    #[error("starting {program} (is e2fsprogs installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("waiting for {program}")]
    Wait {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its deadline and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        timeout: Duration,
    },
    /// It exited with a failure code.
    #[error("{program} exited with code {code}: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Exit code.
        code: i32,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
}

/// Runs `program args...` and returns its output whatever the exit code, within `timeout`.
pub fn run_raw(
    program: &str,
    args: &[&std::ffi::OsStr],
    timeout: Duration,
) -> Result<ToolOutput, ToolError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    // Drain both pipes on their own threads so a chatty tool cannot block on a full pipe.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::Timeout {
                    program: program.to_owned(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::Wait {
                    program: program.to_owned(),
                    source,
                });
            }
        }
    };
    Ok(ToolOutput {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Runs `program args...` and fails unless it exits with one of `ok_codes`.
pub fn run_ok(
    program: &str,
    args: &[&std::ffi::OsStr],
    ok_codes: &[i32],
    timeout: Duration,
) -> Result<ToolOutput, ToolError> {
    let out = run_raw(program, args, timeout)?;
    if ok_codes.contains(&out.code()) {
        Ok(out)
    } else {
        Err(ToolError::Failed {
            program: program.to_owned(),
            code: out.code(),
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

/// Shorthand for an `OsStr` argument list.
pub fn args<'a>(items: &'a [&'a dyn AsRef<std::ffi::OsStr>]) -> Vec<&'a std::ffi::OsStr> {
    items.iter().map(|a| a.as_ref()).collect()
}

/// Whether `path` exists as a program stord can run (for capability reports).
pub fn available(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tool_reports_its_code_and_stderr() {
        let err = run_ok(
            "sh",
            &args(&[&"-c", &"echo boom >&2; exit 3"]),
            &[0],
            Duration::from_secs(10),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("code 3") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn a_tool_past_its_deadline_is_killed() {
        let err = run_raw("sleep", &args(&[&"30"]), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ToolError::Timeout { .. }), "{err}");
    }

    #[test]
    fn a_missing_tool_says_so() {
        let err = run_raw("banger-no-such-tool", &[], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ToolError::Spawn { .. }), "{err}");
    }
}
