//! The real hypervisor: Firecracker, or the simulator (`banger-fcsim`), which takes the same
//! flags and serves the same API.
//!
//! Launch runs `<bin> --api-sock ... --id <name> ...` directly, with umask 000 (spawned from a
//! thread that has a umask of its own, without forking the controller: see [`super::spawner`];
//! where that thread cannot be had, set in the child between fork and exec), so the API and
//! vsock sockets the hypervisor creates are usable by the controller and the tools of any user (the earlier Go version regressed
//! here and timed out on a socket that existed but could not be used). Who may use them is
//! decided by the directory they are in instead: the VM's run directory (and every parent
//! banger creates) is mode 0700, root only, the way Firecracker's jailer confines its chroot;
//! a socket mode is never what keeps other users out. The process gets its
//! own process group, so a Ctrl-C at the controller's terminal never reaches a guest and a
//! forced stop can take the group down at once. The guest's serial console (the hypervisor's
//! stdout) goes to `serial.log`, its own log to `vmm.log`.
//!
//! The process is not kept as a child handle: it outlives a controller restart, and every
//! later action finds it again by its API socket ([`super::process`]). While this controller
//! is its parent, a task waits for it and records its exit status ([`Vmm::exit_status`]), so a
//! VM whose hypervisor died says how.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_bus::private;
use banger_firecracker::FirecrackerClient;
use banger_firecracker::calls::{self, ApiCall, EncodeError};
use banger_firecracker::models::{
    BootSource, Drive, MachineConfiguration, Metrics, NetworkInterface, Vsock,
};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::spawner::Spawner;
use super::{LaunchSpec, ProcUsage, Vmm, VmmError, process};
use crate::config::{VmPaths, VmmKind};

/// How often start-up checks whether the API socket answers yet, during [`SOCKET_FAST_FOR`]
/// after the spawn: a hypervisor binds it within a few milliseconds (Firecracker promises
/// about 12 ms), and a failed `connect` to a path costs microseconds, so the wait ends within
/// a millisecond of the socket instead of up to [`SOCKET_POLL`] later.
const SOCKET_POLL_FAST: Duration = Duration::from_millis(1);

/// How long after the spawn the API socket is looked for every [`SOCKET_POLL_FAST`].
const SOCKET_FAST_FOR: Duration = Duration::from_millis(100);

/// How often start-up checks whether the API socket answers yet, after [`SOCKET_FAST_FOR`]
/// (a loaded host).
const SOCKET_POLL: Duration = Duration::from_millis(10);

/// How much of the hypervisor log an early-exit error quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// The drive id of the root drive.
pub const ROOT_DRIVE_ID: &str = "rootfs";
/// The drive id of the work disk (mounted at `/root` by the guest).
pub const WORK_DRIVE_ID: &str = "work";
/// The network interface id.
pub const IFACE_ID: &str = "eth0";

/// How often [`Vmm::exit_status`] looks again for a status being recorded.
const REAP_POLL: Duration = Duration::from_millis(10);

/// A hypervisor this controller spawned, by API socket: its pid while it runs, then how it
/// exited.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spawned {
    Running(u32),
    Exited(String),
}

/// Firecracker (or the simulator) as separate processes.
#[derive(Debug, Clone)]
pub struct ProcessVmm {
    kind: VmmKind,
    bin: PathBuf,
    log_level: String,
    socket_timeout: Duration,
    api_timeout: Duration,
    spawned: Arc<Mutex<HashMap<PathBuf, Spawned>>>,
    /// Spawns with umask 000 without a fork; `None` when it could not start (then the launch
    /// forks and sets the umask in the child).
    spawner: Option<Spawner>,
}

impl ProcessVmm {
    /// A hypervisor of `kind` run from `bin`.
    pub fn new(
        kind: VmmKind,
        bin: PathBuf,
        log_level: String,
        socket_timeout: Duration,
        api_timeout: Duration,
    ) -> Self {
        Self {
            kind,
            bin,
            log_level,
            socket_timeout,
            api_timeout,
            spawned: Arc::default(),
            spawner: Spawner::start()
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "no umask-000 spawner thread: hypervisors are forked with a pre-exec umask")
                })
                .ok(),
        }
    }

    fn spawned(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Spawned>> {
        self.spawned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `child`'s exit status under `api_sock` when it exits (the task ends with the
    /// process, or with the runtime at shutdown: the process outlives the controller).
    fn reap(&self, api_sock: PathBuf, pid: u32, mut child: tokio::process::Child) {
        self.spawned()
            .insert(api_sock.clone(), Spawned::Running(pid));
        let spawned = Arc::clone(&self.spawned);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("exit status unknown: waiting for it failed: {e}"),
            };
            tracing::debug!(pid, %status, "hypervisor exited");
            let mut map = spawned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only this process's entry: the VM may have been started again since.
            if map.get(&api_sock) == Some(&Spawned::Running(pid)) {
                map.insert(api_sock, Spawned::Exited(status));
            }
        });
    }

    fn client(&self, paths: &VmPaths) -> FirecrackerClient {
        FirecrackerClient::new(&paths.api_sock).with_timeout(self.api_timeout)
    }
}

/// Creates the VM's directories (mode 0700, and so are missing parents), empty log files and
/// the metrics file (0600), and removes sockets a previous run left (Firecracker refuses to bind an existing
/// socket path).
///
/// The run directory is what guards the 0777 sockets the umask-000 launch gives the
/// hypervisor: only root may enter it. One left open by an earlier version is closed here too,
/// before the hypervisor creates a socket in it.
fn prepare(paths: &VmPaths) -> Result<(fs::File, fs::File), VmmError> {
    let prep = |path: &Path| {
        let path = path.to_owned();
        move |source| VmmError::Prepare { path, source }
    };
    for dir in [&paths.run_dir, &paths.log_dir] {
        private::create_dir_all(dir).map_err(prep(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(private::DIR_MODE))
            .map_err(prep(dir))?;
    }
    remove_runtime_sockets(paths);
    let open = |p: &Path| private::create_file(p).map_err(prep(p));
    let logs = (open(&paths.serial_log)?, open(&paths.vmm_log)?);
    // The metrics file Firecracker appends to (`PUT /metrics` needs it to exist); without it
    // the VM still boots, without `vm stats` metrics.
    if let Err(e) = private::create_file(&paths.metrics) {
        tracing::warn!(path = %paths.metrics.display(), error = %e, "creating the metrics file");
    }
    Ok(logs)
}

/// Removes the API socket and every vsock socket (`vsock.sock`, `vsock.sock_<port>`) of a VM.
pub fn remove_runtime_sockets(paths: &VmPaths) {
    let _ = fs::remove_file(&paths.api_sock);
    let vsock_name = paths
        .vsock_uds
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(entries) = fs::read_dir(&paths.run_dir) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == vsock_name || name.starts_with(&format!("{vsock_name}_")) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The last few KiB of a log, for error messages.
fn log_tail(path: &Path) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_owned()
}

impl Vmm for ProcessVmm {
    fn kind(&self) -> VmmKind {
        self.kind
    }

    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> BoxFuture<'a, Result<u32, VmmError>> {
        Box::pin(async move {
            let paths = spec.paths.clone();
            let (serial, vmm_log) = tokio::task::spawn_blocking(move || prepare(&paths))
                .instrument(tracing::debug_span!("vmm.prepare"))
                .await
                .map_err(|e| VmmError::Prepare {
                    path: spec.paths.run_dir.clone(),
                    source: std::io::Error::other(e),
                })??;
            let mut cmd = tokio::process::Command::new(&self.bin);
            cmd.arg("--api-sock")
                .arg(&spec.paths.api_sock)
                .arg("--id")
                .arg(&spec.name)
                .arg("--log-path")
                .arg(&spec.paths.vmm_log)
                .arg("--level")
                .arg(&self.log_level)
                .stdin(Stdio::null())
                .stdout(serial)
                .stderr(vmm_log)
                .process_group(0)
                .kill_on_drop(false);
            let spawned = match &self.spawner {
                Some(spawner) => {
                    spawner
                        .spawn(cmd)
                        .instrument(tracing::debug_span!("vmm.spawn"))
                        .await
                }
                None => {
                    // SAFETY: the hook runs in the forked child before exec, where only
                    // async-signal-safe calls are allowed: umask(2) is one, and the closure
                    // allocates nothing, takes no lock and touches no state of the parent.
                    unsafe {
                        cmd.pre_exec(|| {
                            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                            Ok(())
                        });
                    }
                    tracing::debug_span!("vmm.spawn").in_scope(|| cmd.spawn())
                }
            };
            let mut child = spawned.map_err(|source| VmmError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
            let pid = child.id().unwrap_or(0);
            tracing::info!(vmm = %self.kind, pid, vm.name = %spec.name, "hypervisor spawned");
            let start = Instant::now();
            let deadline = start + self.socket_timeout;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(VmmError::ExitedEarly {
                        status: status.to_string(),
                        log_tail: log_tail(&spec.paths.vmm_log),
                    });
                }
                if tokio::net::UnixStream::connect(&spec.paths.api_sock)
                    .await
                    .is_ok()
                {
                    // kill_on_drop is off: the process outlives this controller.
                    self.reap(spec.paths.api_sock.clone(), pid, child);
                    return Ok(pid);
                }
                if Instant::now() >= deadline {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                    return Err(VmmError::ApiSocket {
                        path: spec.paths.api_sock.clone(),
                        waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(0),
                    });
                }
                let step = if start.elapsed() < SOCKET_FAST_FOR {
                    SOCKET_POLL_FAST
                } else {
                    SOCKET_POLL
                };
                tokio::time::sleep(step).await;
            }
        })
    }

    fn configure_and_start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<(), VmmError>> {
        Box::pin(async move {
            // One connection for the whole configuration (see `Session`).
            let mut c = self.client(&spec.paths).session();
            let call =
                |made: Result<ApiCall, EncodeError>| made.map_err(|e| VmmError::Api(e.into()));
            let cpus = u8::try_from(spec.cpus).unwrap_or(u8::MAX);
            let mc = MachineConfiguration::new(cpus, u64::from(spec.memory_mib));
            let boot = BootSource {
                kernel_image_path: spec.kernel.clone(),
                boot_args: Some(spec.boot_args.clone()),
                initrd_path: spec.initrd.clone(),
            };
            let root = Drive::new(ROOT_DRIVE_ID, &spec.root_path, true, false);
            let work = Drive::new(WORK_DRIVE_ID, &spec.work_disk_path, false, false);
            let nic = NetworkInterface::new(IFACE_ID, &spec.tap, &spec.mac);
            let vsock = Vsock::new(spec.vsock_cid, &spec.paths.vsock_uds);
            for made in [
                calls::put_machine_config(&mc),
                calls::put_boot_source(&boot),
                calls::put_drive(&root),
                calls::put_drive(&work),
                calls::put_network_interface(&nic),
                calls::put_vsock(&vsock),
            ] {
                c.no_content(call(made)?).await.map_err(VmmError::Api)?;
            }
            // Metrics feed `vm stats`; a VM boots without them, so a failure here only warns.
            // The file was made (0600) with the logs before the launch.
            let metrics = Metrics {
                metrics_path: spec.paths.metrics.clone(),
                emit_id: None,
                properties: None,
            };
            let configured = match calls::put_metrics(&metrics) {
                Ok(made) => c.no_content(made).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = configured {
                tracing::warn!(vm = %spec.name, error = %banger_bus::runtime::chain(&e), "hypervisor metrics unavailable");
            }
            c.no_content(call(calls::instance_start())?)
                .await
                .map_err(VmmError::Api)
        })
    }

    fn ctrl_alt_del<'a>(&'a self, paths: &'a VmPaths) -> BoxFuture<'a, Result<(), VmmError>> {
        Box::pin(async move {
            self.client(paths)
                .send_ctrl_alt_del()
                .await
                .map_err(VmmError::Api)
        })
    }

    fn find_process<'a>(
        &'a self,
        paths: &'a VmPaths,
        hint: Option<u32>,
    ) -> BoxFuture<'a, Option<u32>> {
        let sock = paths.api_sock.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || process::find_by_socket(&sock, hint))
                .await
                .ok()
                .flatten()
        })
    }

    fn kill(&self, pid: u32, paths: &VmPaths) -> Result<bool, VmmError> {
        process::kill_process(pid, &paths.api_sock)
            .map_err(|source| VmmError::Signal { pid, source })
    }

    fn is_alive(&self, pid: u32) -> bool {
        process::is_alive(pid)
    }

    fn wait_exit(&self, pid: u32, limit: Duration) -> BoxFuture<'_, bool> {
        Box::pin(process::wait_exit(pid, limit))
    }

    fn usage(&self, pid: u32) -> Option<ProcUsage> {
        process::usage(pid)
    }

    fn exit_status<'a>(
        &'a self,
        paths: &'a VmPaths,
        wait: Duration,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let end = Instant::now() + wait;
            loop {
                let pid = match self.spawned().get(&paths.api_sock) {
                    None => return None,
                    Some(Spawned::Exited(status)) => return Some(status.clone()),
                    Some(Spawned::Running(pid)) => *pid,
                };
                // Not asked to wait, or alive: no status yet. Gone: the reaper is about to
                // record it.
                if wait.is_zero() || process::is_alive(pid) || Instant::now() >= end {
                    return None;
                }
                tokio::time::sleep(REAP_POLL).await;
            }
        })
    }

    fn metrics<'a>(&'a self, paths: &'a VmPaths) -> BoxFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            self.client(paths).flush_metrics().await.ok()?;
            let file = paths.metrics.clone();
            tokio::task::spawn_blocking(move || last_json_line(&file))
                .await
                .ok()
                .flatten()
        })
    }
}

/// The last complete JSON line of a metrics file (Firecracker appends one per flush).
fn last_json_line(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}
