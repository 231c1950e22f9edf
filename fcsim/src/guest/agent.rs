//! The guest's userspace: the real `banger-agent`, started as the guest's init would start it.
//!
//! With root and an ext4 work disk, the agent runs in a private mount namespace where the work
//! disk is loop-mounted at `/root`, as the guest sees it:
//!
//! ```text
//! unshare --mount --propagation private -- \
//!     sh -c 'mount -o loop -t ext4 "$0" /root || exit 97; exec "$@"' <image> \
//!     banger-agent --listen unix:<sock> --allow-exec
//! ```
//!
//! `unshare` without `--fork` execs in place, so the agent *is* the process that owns the
//! namespace: when it exits the namespace dies, the mount goes with it and util-linux's
//! `-o loop` (LO_FLAGS_AUTOCLEAR) releases the loop device. Nothing else holds the image, so
//! there is no loop device to leak. The agent gets PR_SET_PDEATHSIG(SIGKILL) so it also dies
//! when the simulator does (the flag survives both execs).
//!
//! Without root (or without an ext4 work disk) the agent runs without the mount, and the log
//! says why.

use std::fs;
use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::log;

/// Exit code of the wrapper when the work disk cannot be mounted.
pub(crate) const MOUNT_FAILED_EXIT: i32 = 97;

/// How long the agent may take to exit after SIGTERM (it lets in-flight replies finish for up
/// to 5 s itself).
const AGENT_STOP_GRACE: Duration = Duration::from_secs(6);

/// How long the kernel may take to drop the mount and release the loop device after the
/// namespace's last process exits.
const LOOP_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The ext4 superblock magic, at byte 1080 of the image.
const EXT4_MAGIC: [u8; 2] = [0x53, 0xef];

/// Whether the file at `path` starts with an ext2/3/4 superblock.
pub(crate) fn is_ext4(path: &Path) -> bool {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080)).is_ok() && f.read_exact(&mut magic).is_ok() && magic == EXT4_MAGIC
}

/// A running agent.
#[derive(Debug)]
pub(crate) struct Agent {
    child: Child,
    /// The image mounted at `/root` in its namespace, if any.
    work_disk: Option<PathBuf>,
}

/// Starts `agent_bin` listening on `socket`, with `work_disk` mounted at `/root` when it can.
pub(crate) fn spawn(
    agent_bin: &Path,
    socket: &Path,
    work_disk: Option<&Path>,
) -> io::Result<Agent> {
    let listen = format!("unix:{}", socket.display());
    let mount = match work_disk {
        None => {
            log::info("no work disk: the agent runs without /root mounted");
            None
        }
        Some(_) if !nix::unistd::geteuid().is_root() => {
            log::warn(
                "not root: the work disk is not mounted at /root (loop mounts need root); \
                 the agent runs in the host's mount namespace",
            );
            None
        }
        Some(disk) if !is_ext4(disk) => {
            log::warn(&format!(
                "work disk {} is not an ext4 image: not mounted at /root",
                disk.display()
            ));
            None
        }
        Some(disk) => Some(disk.to_owned()),
    };
    let mut cmd = match &mount {
        Some(disk) => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(format!(
                    r#"mount -o loop -t ext4 "$0" /root || exit {MOUNT_FAILED_EXIT}; exec "$@""#
                ))
                .arg(disk)
                .arg(agent_bin);
            c
        }
        None => Command::new(agent_bin),
    };
    cmd.arg("--listen").arg(&listen).arg("--allow-exec");
    // The guest's console is the serial port: the agent's log goes there.
    let console = io::stdout().as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(console.try_clone()?))
        .stderr(Stdio::from(console))
        .current_dir("/")
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec; it only calls prctl (async-signal-safe,
    // no memory effects with PR_SET_PDEATHSIG and a valid signal) and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let rc = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    if let Some(disk) = &mount {
        log::info(&format!(
            "agent pid {} runs with work disk {} loop-mounted at /root in a private mount namespace",
            child.id().unwrap_or(0),
            disk.display()
        ));
    }
    Ok(Agent {
        child,
        work_disk: mount,
    })
}

impl Agent {
    /// The agent's pid, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `sig` to the agent (SIGSTOP/SIGCONT for pause/resume).
    pub(crate) fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// If the agent already exited, its status (a failed mount shows here).
    pub(crate) fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the agent (SIGTERM, then SIGKILL after a grace period), then waits for the loop
    /// device behind the work disk to be released.
    pub(crate) async fn stop(mut self) {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(AGENT_STOP_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => log::info(&format!("agent exited: {status}")),
            Ok(Err(e)) => log::warn(&format!("waiting for the agent: {e}")),
            Err(_) => {
                log::warn("agent ignored SIGTERM: killing it");
                let _ = self.child.kill().await;
            }
        }
        if let Some(disk) = &self.work_disk {
            let deadline = tokio::time::Instant::now() + LOOP_RELEASE_WAIT;
            loop {
                let held = loop_devices_backed_by(disk);
                if held.is_empty() {
                    log::info(&format!(
                        "work disk {} unmounted, loop device released",
                        disk.display()
                    ));
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    log::error(&format!(
                        "work disk {} still attached to {} after the agent exited",
                        disk.display(),
                        held.join(", ")
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The loop devices (`loop3`, ...) whose backing file is `image`.
pub(crate) fn loop_devices_backed_by(image: &Path) -> Vec<String> {
    let Ok(image) = fs::canonicalize(image) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            (Path::new(backing.trim()) == image).then_some(name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_is_recognised_by_its_superblock_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut bytes = vec![0u8; 2048];
        fs::write(&p, &bytes).unwrap();
        assert!(!is_ext4(&p));
        bytes[1080] = 0x53;
        bytes[1081] = 0xef;
        fs::write(&p, &bytes).unwrap();
        assert!(is_ext4(&p));
        assert!(!is_ext4(&dir.path().join("missing")));
    }
}
