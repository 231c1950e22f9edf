//! The hypervisor boundary: spawning, configuring, signalling and finding VMM processes.
//!
//! [`Vmm`] is the only way the controller touches a hypervisor process, so the lifecycle logic
//! (state machine, unwinding, the stop fallback) is unit-tested with a double and the real
//! implementation ([`firecracker::ProcessVmm`], for Firecracker and for the simulator, which
//! takes the same flags and serves the same API) is tested for real.
//!
//! A process is always *found by its API socket* ([`Vmm::find_process`]): the stored pid is
//! only a hint, because it may be stale (the process died and the pid was reused, or the
//! controller restarted and re-adopted VMs).

pub mod firecracker;
pub mod process;
pub mod spawner;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{VmPaths, VmmKind};

/// How often [`Vmm::wait_exit`]'s default looks whether a process is gone.
pub const EXIT_POLL: Duration = Duration::from_millis(5);

/// Everything needed to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The VM's name: the hypervisor's `--id` (the simulator selects faults by it).
    pub name: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Kernel command line, including the lease's `ip=` argument.
    pub boot_args: String,
    /// Root drive (block device or file).
    pub root_path: PathBuf,
    /// Work disk (mounted at `/root` in the guest).
    pub work_disk_path: PathBuf,
    /// Host tap device.
    pub tap: String,
    /// Guest MAC.
    pub mac: String,
    /// Guest vsock context id.
    pub vsock_cid: u32,
    /// Sockets and logs.
    pub paths: VmPaths,
}

/// Resource use of a hypervisor process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUsage {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time, milliseconds.
    pub cpu_ms: u64,
}

/// A hypervisor failure, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Preparing the VM's directories or log files failed.
    #[error("preparing {path}")]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("spawning {bin}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before its API socket answered.
    #[error("the hypervisor exited during start-up ({status}); its log says: {log_tail}")]
    ExitedEarly {
        /// Exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The API socket did not accept connections in time.
    #[error("the hypervisor's api socket {path} did not answer within {waited_ms} ms")]
    ApiSocket {
        /// The socket.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
    /// An API call failed.
    #[error("hypervisor api")]
    Api(#[source] banger_firecracker::ClientError),
    /// A signal could not be sent.
    #[error("signalling process {pid}")]
    Signal {
        /// The process.
        pid: u32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// The hypervisor, as the controller drives it.
pub trait Vmm: Send + Sync + 'static {
    /// Which hypervisor this is.
    fn kind(&self) -> VmmKind;

    /// Spawns the hypervisor for `spec` (umask 000, own process group, logs to the VM's log
    /// files) and waits until its API socket accepts connections. Returns its pid.
    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> BoxFuture<'a, Result<u32, VmmError>>;

    /// Configures the machine, boot source, drives, network interface and vsock, then
    /// `InstanceStart`.
    fn configure_and_start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<(), VmmError>>;

    /// Asks the guest to shut down (`SendCtrlAltDel`).
    fn ctrl_alt_del<'a>(&'a self, paths: &'a VmPaths) -> BoxFuture<'a, Result<(), VmmError>>;

    /// The live process serving `paths.api_sock`, checking `hint` first. `None` when no process
    /// holds the socket.
    fn find_process<'a>(
        &'a self,
        paths: &'a VmPaths,
        hint: Option<u32>,
    ) -> BoxFuture<'a, Option<u32>>;

    /// Sends SIGKILL to `pid` (its whole process group when it leads one of its own) if it is
    /// the hypervisor serving `paths.api_sock`. Returns whether it was: `false` when `pid` is
    /// gone or names another process (a stale pid reused), which is then left alone.
    fn kill(&self, pid: u32, paths: &VmPaths) -> Result<bool, VmmError>;

    /// Whether `pid` is alive (a zombie is not).
    fn is_alive(&self, pid: u32) -> bool;

    /// Waits up to `limit` for `pid` to exit (a zombie has); returns whether it did. The real
    /// implementation is woken by the process's pidfd, so it returns when the process exits;
    /// this default (for doubles) looks with [`Vmm::is_alive`] at [`EXIT_POLL`] intervals.
    fn wait_exit(&self, pid: u32, limit: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let end = tokio::time::Instant::now() + limit;
            loop {
                if !self.is_alive(pid) {
                    return true;
                }
                if tokio::time::Instant::now() >= end {
                    return false;
                }
                tokio::time::sleep(EXIT_POLL).await;
            }
        })
    }

    /// Resource use of `pid`.
    fn usage(&self, pid: u32) -> Option<ProcUsage>;

    /// How the hypervisor serving `paths.api_sock` exited (`exit status: 1`, `signal: 9
    /// (SIGKILL)`), when this controller spawned it and saw it exit. Waits up to `wait` for a
    /// process it spawned that is gone but not reaped yet. `None` while it runs, or when another
    /// controller spawned it (a restarted controller is no longer its parent).
    fn exit_status<'a>(
        &'a self,
        paths: &'a VmPaths,
        wait: Duration,
    ) -> BoxFuture<'a, Option<String>> {
        let _ = (paths, wait);
        Box::pin(async { None })
    }

    /// The hypervisor's own metrics, freshly flushed; `None` when it does not answer or keeps
    /// none.
    fn metrics<'a>(&'a self, paths: &'a VmPaths) -> BoxFuture<'a, Option<serde_json::Value>> {
        let _ = paths;
        Box::pin(async { None })
    }
}
