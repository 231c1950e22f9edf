//! A pidfd: a file descriptor that names one process for as long as it is held.
//!
//! `pidfd_open(2)` (Linux 5.3) returns a descriptor for a process; `pidfd_send_signal(2)` on it
//! reaches that process or, once it has exited, nobody — never a later process that got the
//! same pid. `poll(2)` reports the descriptor readable when the process has exited, so waiting
//! for a process that is not our child needs no polling of `/proc`.

use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// A handle on one process (see the module doc).
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

/// How [`PidFd::terminate`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It had already exited.
    AlreadyGone,
    /// It exited within the grace period after SIGTERM.
    Exited,
    /// It was SIGKILLed after the grace period and is gone.
    Killed,
    /// It survived SIGKILL for the wait that followed (stuck in the kernel).
    Survived,
}

/// How long [`PidFd::terminate`] waits for a process to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl PidFd {
    /// Opens a pidfd on `pid`. Fails with `ESRCH` when no such process exists.
    pub fn open(pid: i32) -> io::Result<Self> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
        // memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, pid })
    }

    /// The pid the process had (and has, while it runs).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to the process. `ESRCH` means it has exited (the signal reached nobody).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid descriptor, a signal number, a null siginfo
        // (the kernel fills in a SI_USER one) and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has exited (a zombie has).
    pub fn has_exited(&self) -> bool {
        self.wait_exit(Duration::ZERO)
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if rc > 0 {
                return true;
            }
            if rc == 0 {
                return false;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // A pidfd that cannot be polled: say "not exited", callers then kill or report.
                return false;
            }
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL (and up to 5 s more).
    pub fn terminate(&self, grace: Duration) -> Termination {
        if self.has_exited() || self.signal(Signal::SIGTERM).is_err() {
            return Termination::AlreadyGone;
        }
        // A stopped process would not act on SIGTERM until continued.
        let _ = self.signal(Signal::SIGCONT);
        if self.wait_exit(grace) {
            return Termination::Exited;
        }
        self.kill()
    }

    /// SIGKILL, then up to 5 s for the process to go.
    pub fn kill(&self) -> Termination {
        if self.signal(Signal::SIGKILL).is_err() {
            return Termination::AlreadyGone;
        }
        if self.wait_exit(KILL_WAIT) {
            Termination::Killed
        } else {
            Termination::Survived
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_pidfd_signals_and_waits_for_its_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = PidFd::open(i32::try_from(child.id()).unwrap()).unwrap();
        assert!(!fd.has_exited());
        assert_eq!(fd.terminate(Duration::from_secs(10)), Termination::Exited);
        assert!(fd.has_exited());
        // Exited (an unreaped zombie still takes signals, to no effect): nothing more is sent.
        assert_eq!(
            fd.terminate(Duration::from_secs(1)),
            Termination::AlreadyGone
        );
        assert!(!child.wait().unwrap().success());
        // Reaped: the pidfd still names that process, so signals reach nobody, whoever has
        // the pid now.
        assert!(fd.signal(Signal::SIGTERM).is_err());
    }

    #[test]
    fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; while :; do :; done"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the trap to be set.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let fd = PidFd::open(i32::try_from(child.id()).unwrap()).unwrap();
        assert_eq!(
            fd.terminate(Duration::from_millis(200)),
            Termination::Killed
        );
        child.wait().unwrap();
    }

    #[test]
    fn no_pidfd_for_a_pid_that_does_not_exist() {
        assert!(PidFd::open(0).is_err());
        assert!(PidFd::open(-5).is_err());
    }
}
