//! The `[vm-controller]` table of the config file, and the directories the controller uses.
//!
//! ```toml
//! [vm-controller]
//! vmm = "firecracker"          # or "sim": the Firecracker simulator (banger-fcsim)
//! firecracker_bin = "firecracker"
//! sim_bin = "/usr/local/bin/banger-fcsim"   # default: next to this binary, else PATH
//! default_image = "debian"
//! default_cpus = 1
//! default_memory_mib = 512
//! stop_grace_ms = 10000        # how long a guest gets to honour CtrlAltDel
//! reconcile_interval_ms = 5000
//! agent_port = 52
//! stop_vms_on_exit = false     # true: stop every running VM before exiting (containers)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use banger_proto::{CpuCount, ImageName, MemMib};
use serde::Deserialize;

/// Which hypervisor runs the VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    /// The real Firecracker binary (needs /dev/kvm).
    #[default]
    Firecracker,
    /// The Firecracker simulator: real taps, disks and agent, no real guest kernel.
    Sim,
}

impl VmmKind {
    /// The config/metadata name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firecracker => "firecracker",
            Self::Sim => "sim",
        }
    }
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmmKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "firecracker" => Ok(Self::Firecracker),
            "sim" => Ok(Self::Sim),
            other => Err(format!(
                "unknown vmm {other:?}: expected firecracker or sim"
            )),
        }
    }
}

/// 10 s: long enough for a systemd guest to shut down cleanly, short enough that `vm stop` of
/// a wedged guest does not look hung (the forced path follows).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// 5 s: how often running VMs are checked for a vanished hypervisor process.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// The `[vm-controller]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Which hypervisor to run.
    pub vmm: VmmKind,
    /// The Firecracker binary (a path, or a name looked up on PATH).
    pub firecracker_bin: PathBuf,
    /// The simulator binary; default: `banger-fcsim` next to this binary, else on PATH.
    pub sim_bin: Option<PathBuf>,
    /// Image of a VM created without `--image`.
    pub default_image: ImageName,
    /// vCPUs of a VM created without `--cpus`.
    pub default_cpus: CpuCount,
    /// Memory of a VM created without `--memory`.
    pub default_memory_mib: MemMib,
    /// How long `stop` waits for the guest to exit after CtrlAltDel before forcing.
    pub stop_grace_ms: u64,
    /// How long to wait for a process to disappear after SIGKILL.
    pub kill_wait_ms: u64,
    /// How long a freshly spawned hypervisor has to open its API socket.
    pub api_socket_timeout_ms: u64,
    /// Deadline of each hypervisor API call.
    pub api_timeout_ms: u64,
    /// How often running VMs are checked (0 disables the periodic pass; start-up still runs).
    pub reconcile_interval_ms: u64,
    /// The guest agent's vsock port.
    pub agent_port: u32,
    /// Deadline of requests to stord and netd.
    pub peer_timeout_ms: u64,
    /// Check that a new VM's name is unused on the other hosts too (one `vm.list` gather).
    pub lab_name_check: bool,
    /// The hypervisor's log level (`--level`).
    pub vmm_log_level: String,
    /// Stop every running VM before exiting on SIGTERM (in a container the VMs' processes die
    /// with the controller's, so they are stopped properly first).
    pub stop_vms_on_exit: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            vmm: VmmKind::Firecracker,
            firecracker_bin: PathBuf::from("firecracker"),
            sim_bin: None,
            default_image: ImageName::new("debian").unwrap_or_else(|_| unreachable_name()),
            default_cpus: CpuCount::new(1).unwrap_or_else(|_| unreachable_quantity()),
            default_memory_mib: MemMib::new(512).unwrap_or_else(|_| unreachable_quantity()),
            stop_grace_ms: duration_ms(DEFAULT_STOP_GRACE),
            kill_wait_ms: 5_000,
            api_socket_timeout_ms: 5_000,
            api_timeout_ms: 5_000,
            reconcile_interval_ms: duration_ms(DEFAULT_RECONCILE_INTERVAL),
            agent_port: banger_proto::agent::DEFAULT_AGENT_PORT,
            peer_timeout_ms: 60_000,
            lab_name_check: true,
            vmm_log_level: "Info".to_owned(),
            stop_vms_on_exit: false,
        }
    }
}

// The literals above are valid by inspection; these keep `unwrap` out of library code.
#[cold]
fn unreachable_name() -> ImageName {
    panic!("the default image name literal is a valid name")
}

#[cold]
fn unreachable_quantity<T>() -> T {
    panic!("the default quantity literals are positive")
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ControllerConfig {
    /// The stop grace window.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    /// How long to wait after SIGKILL.
    pub fn kill_wait(&self) -> Duration {
        Duration::from_millis(self.kill_wait_ms)
    }

    /// Deadline of stord/netd requests.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }

    /// The periodic reconcile interval, `None` when disabled.
    pub fn reconcile_interval(&self) -> Option<Duration> {
        (self.reconcile_interval_ms > 0).then(|| Duration::from_millis(self.reconcile_interval_ms))
    }

    /// The hypervisor binary to run for the configured [`VmmKind`].
    pub fn vmm_bin(&self) -> PathBuf {
        match self.vmm {
            VmmKind::Firecracker => self.firecracker_bin.clone(),
            VmmKind::Sim => self.sim_bin.clone().unwrap_or_else(default_sim_bin),
        }
    }
}

/// `banger-fcsim` beside the running executable when it is there (a cargo target dir or an
/// install prefix), else the bare name for a PATH lookup.
fn default_sim_bin() -> PathBuf {
    const NAME: &str = "banger-fcsim";
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(NAME)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(NAME))
}

/// Where one VM's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// `<runtime_dir>/vm-controller/<id>`: sockets, removed when the VM stops.
    pub run_dir: PathBuf,
    /// The hypervisor's API socket.
    pub api_sock: PathBuf,
    /// The vsock Unix socket (hybrid vsock; guest-initiated connections at `<path>_<port>`).
    pub vsock_uds: PathBuf,
    /// `<state_dir>/vm-controller/vms/<id>`: logs, kept until the VM is deleted.
    pub log_dir: PathBuf,
    /// The guest serial console (the hypervisor's stdout).
    pub serial_log: PathBuf,
    /// The hypervisor's own log.
    pub vmm_log: PathBuf,
    /// The hypervisor's metrics lines (Firecracker's metrics file).
    pub metrics: PathBuf,
}

/// The controller's two roots.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `<state_dir>/vm-controller`: the database and per-VM logs.
    pub state: PathBuf,
    /// `<runtime_dir>/vm-controller`: per-VM sockets.
    pub runtime: PathBuf,
}

impl Dirs {
    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.state.join("vms.sqlite")
    }

    /// The paths of VM `id`.
    pub fn vm(&self, id: &banger_proto::VmId) -> VmPaths {
        let run_dir = self.runtime.join(id.as_str());
        let log_dir = self.state.join("vms").join(id.as_str());
        VmPaths {
            api_sock: run_dir.join("api.sock"),
            vsock_uds: run_dir.join("vsock.sock"),
            run_dir,
            serial_log: log_dir.join("serial.log"),
            vmm_log: log_dir.join("vmm.log"),
            metrics: log_dir.join("metrics.json"),
            log_dir,
        }
    }
}

impl VmPaths {
    /// Whether `p` is one of this VM's runtime files (for cleanup of `vsock.sock_<port>`).
    pub fn is_runtime_file(&self, p: &Path) -> bool {
        p.starts_with(&self.run_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read_strictly_with_defaults() {
        let c: ControllerConfig = toml_like(r#"{"vmm":"sim","stop_grace_ms":250}"#).unwrap();
        assert_eq!(c.vmm, VmmKind::Sim);
        assert_eq!(c.stop_grace(), Duration::from_millis(250));
        assert_eq!(c.default_cpus.get(), 1);
        assert!(toml_like(r#"{"vmm":"qemu"}"#).is_err());
        assert!(toml_like(r#"{"default_cpus":0}"#).is_err());
        assert!(toml_like(r#"{"default_memory_mib":-1}"#).is_err());
        assert!(toml_like(r#"{"stop_grace":1}"#).is_err());
    }

    fn toml_like(json: &str) -> Result<ControllerConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn vm_paths_are_per_id() {
        let d = Dirs {
            state: "/s/vm-controller".into(),
            runtime: "/r/vm-controller".into(),
        };
        let id = banger_proto::VmId::new("0123456789abcdef0123456789abcdef").unwrap();
        let p = d.vm(&id);
        assert_eq!(
            p.api_sock,
            PathBuf::from("/r/vm-controller/0123456789abcdef0123456789abcdef/api.sock")
        );
        assert!(p.serial_log.starts_with("/s/vm-controller/vms"));
        assert!(p.is_runtime_file(&p.vsock_uds));
    }
}
