//! Process identity that pid reuse cannot fool.
//!
//! A pid names a process only while it lives: `pid_max` is 32768 on the machines banger runs
//! on, and a busy host (a test suite, a fleet of VMs) wraps that space within minutes. A pid
//! remembered in a file or a database may name a stranger by the time it is used, and a
//! signal sent to it kills the wrong process. So every place that signals a process it did not
//! just spawn goes through this crate:
//!
//! - [`ProcessId`]: a pid together with the process's start time (field 22 of
//!   `/proc/<pid>/stat`, clock ticks since boot). The kernel never gives two processes alive at
//!   once the same pid, and a pid is reused only after its process is gone, so a later process
//!   with the same pid has a later start time. Pid files hold both (`PID START_TIME`).
//! - [`PidFd`]: a pidfd (`pidfd_open(2)`), a handle on one process, never on whatever reuses
//!   its pid later. The safe order is: open the pidfd, *then* check that the process behind the
//!   pid is the one wanted (start time, command line), then signal through the pidfd. If the
//!   process exited in between, the check may look at a stranger, but the signal still goes to
//!   the dead process the pidfd holds, and so to nobody.
//! - [`cmdline`] and [`args_contain`]: what a process was started with, to tell a stack's own
//!   service (`--config <its stack file>`) from another stack's copy of the same program.

mod pidfd;
mod stat;

use std::fmt;
use std::path::Path;

pub use pidfd::{PidFd, Termination};
pub use stat::{Stat, stat};

/// A process: its pid and its start time, which together never name another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    pid: i32,
    start_time: u64,
}

/// Why a pid file's text is not a [`ProcessId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected `PID START_TIME` (two numbers), found {:?}",
            self.0
        )
    }
}

impl std::error::Error for ParseError {}

impl ProcessId {
    /// The identity of the live process `pid` (not a zombie), read from `/proc`.
    pub fn of(pid: i32) -> Option<Self> {
        let s = stat(pid)?;
        (!s.is_zombie()).then_some(Self {
            pid,
            start_time: s.start_time,
        })
    }

    /// This process.
    ///
    /// # Panics
    /// Never in practice: `/proc/self/stat` of a running process always reads.
    #[allow(
        clippy::expect_used,
        reason = "a running process always has its own stat"
    )]
    pub fn current() -> Self {
        let pid = i32::try_from(std::process::id()).expect("pids fit in i32");
        Self::of(pid).expect("/proc/<own pid>/stat is readable")
    }

    /// An identity from its parts (a stored pid and start time).
    pub fn new(pid: i32, start_time: u64) -> Self {
        Self { pid, start_time }
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The start time, in clock ticks since boot.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Parses the pid-file form, `PID START_TIME` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(text.trim().chars().take(64).collect());
        let mut fields = text.split_whitespace();
        let pid = fields
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .ok_or_else(bad)?;
        let start_time = fields
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(bad)?;
        if pid <= 0 || fields.next().is_some() {
            return Err(bad());
        }
        Ok(Self { pid, start_time })
    }

    /// Reads a pid file written with [`ProcessId::write_pid_file`].
    pub fn read_pid_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Writes `PID START_TIME\n` to `path`, replacing it atomically (a reader never sees half a
    /// file).
    pub fn write_pid_file(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{self}\n"))?;
        std::fs::rename(&tmp, path)
    }

    /// Whether this very process still runs (same pid, same start time, not a zombie).
    pub fn is_running(&self) -> bool {
        Self::of(self.pid) == Some(*self)
    }

    /// A pidfd on this process, checked after opening: `None` when it has exited (even if its
    /// pid now names another process).
    pub fn open(&self) -> Option<PidFd> {
        let fd = PidFd::open(self.pid).ok()?;
        // Checked after the pidfd is held: if the process exits now, the pidfd still names it
        // and its signals reach nobody.
        self.is_running().then_some(fd)
    }
}

impl fmt::Display for ProcessId {
    /// The pid-file form, `PID START_TIME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pid, self.start_time)
    }
}

/// The command line of `pid`, one entry per argument; `None` when it is gone or has none (a
/// zombie, a kernel thread, and — for an instant — a process whose `exec` is still laying out
/// its arguments).
pub fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        return None;
    }
    Some(raw.split(|b| *b == 0).map(<[u8]>::to_vec).collect())
}

/// Sends `sig` to every live (not zombie) member of process group `pgrp`, each through a pidfd checked
/// (after opening) to still be in that group; returns how many were signalled.
///
/// For a group whose leader was already reaped: its id then stays reserved only while a member
/// lives, so `killpg` could reach a new group that reused the id once the last member is gone.
/// While the leader is unreaped (running or a zombie), `killpg` is safe and simpler.
pub fn signal_group_members(pgrp: i32, sig: nix::sys::signal::Signal) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgrp && !s.is_zombie()))
        .filter_map(|pid| {
            let fd = PidFd::open(pid).ok()?;
            stat(pid)
                .is_some_and(|s| s.pgrp == pgrp && !s.is_zombie())
                .then_some(fd)
        })
        .filter(|fd| fd.signal(sig).is_ok())
        .count()
}

/// Whether `args` holds `wanted` as consecutive arguments (`["--config", "/x/stack.toml"]`).
pub fn args_contain(args: &[Vec<u8>], wanted: &[&[u8]]) -> bool {
    !wanted.is_empty()
        && args
            .windows(wanted.len())
            .any(|w| w.iter().zip(wanted).all(|(a, b)| a.as_slice() == *b))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn the_pid_file_form_round_trips_and_rejects_anything_else() {
        let id = ProcessId::new(4242, 987_654);
        assert_eq!(id.to_string(), "4242 987654");
        assert_eq!(ProcessId::parse("4242 987654\n"), Ok(id));
        for bad in ["", "4242", "4242\n", "x 1", "1 y", "0 5", "-3 5", "1 2 3"] {
            assert!(ProcessId::parse(bad).is_err(), "{bad:?} parsed");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.pid");
        id.write_pid_file(&file).unwrap();
        assert_eq!(ProcessId::read_pid_file(&file).unwrap(), id);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_live_process_is_itself_and_not_a_process_with_another_start_time() {
        let me = ProcessId::current();
        assert!(me.is_running());
        assert!(me.open().is_some());
        // Same pid, different start time: what a recycled pid looks like.
        let recycled = ProcessId::new(me.pid(), me.start_time() + 1);
        assert!(!recycled.is_running());
        assert!(
            recycled.open().is_none(),
            "a pidfd is never handed out for a stranger"
        );
        let earlier = ProcessId::new(me.pid(), me.start_time().saturating_sub(1));
        assert!(!earlier.is_running());
    }

    #[test]
    fn an_exited_process_is_not_running_even_as_an_unreaped_zombie() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let id = ProcessId::of(pid);
        // Wait for the exit without reaping: the pid stays taken by the zombie.
        let fd = PidFd::open(pid).unwrap();
        assert!(fd.wait_exit(std::time::Duration::from_secs(10)));
        if let Some(id) = id {
            assert!(!id.is_running(), "a zombie does not run");
            assert!(id.open().is_none());
        }
        assert!(ProcessId::of(pid).is_none());
        child.wait().unwrap();
    }

    #[test]
    fn a_group_whose_leader_was_reaped_is_signalled_member_by_member() {
        use std::os::unix::process::CommandExt as _;
        // A leader that exits at once, leaving a member behind in its group.
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let group = i32::try_from(leader.id()).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut leader.stdout.take().unwrap(), &mut out).unwrap();
        leader.wait().unwrap();
        let member: i32 = out.trim().parse().unwrap();
        let fd = PidFd::open(member).unwrap();
        assert_eq!(stat(member).unwrap().pgrp, group);
        assert_eq!(
            signal_group_members(group, nix::sys::signal::Signal::SIGKILL),
            1
        );
        assert!(fd.wait_exit(std::time::Duration::from_secs(10)));
        assert_eq!(
            signal_group_members(group, nix::sys::signal::Signal::SIGKILL),
            0
        );
    }

    #[test]
    fn command_lines_are_matched_by_consecutive_arguments() {
        let mut child = Command::new("sleep").args(["--", "30"]).spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Right after spawn the command line can read empty: the parent resumes once the
        // child's exec has replaced its memory, before the arguments are laid out in it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let args = loop {
            match cmdline(pid) {
                Some(args) => break args,
                None if std::time::Instant::now() < deadline => std::thread::yield_now(),
                None => panic!("no command line for {pid}"),
            }
        };
        assert!(args_contain(&args, &[b"--", b"30"]));
        assert!(!args_contain(&args, &[b"30", b"--"]));
        assert!(!args_contain(&args, &[b"--", b"3"]));
        assert!(!args_contain(&args, &[]));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(cmdline(pid).is_none());
    }
}
