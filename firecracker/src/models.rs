//! Typed bodies of the Firecracker API calls banger makes, named as in `api/firecracker.yaml`.
//!
//! Request types serialize exactly the fields of their definition (optional ones are omitted
//! when `None`) and deny unknown fields when parsed, as Firecracker's own request types do; the
//! simulator parses with them after validating against the definition. Response types
//! ([`InstanceInfo`], [`FirecrackerVersion`], [`ApiErrorBody`]) accept unknown fields so a newer
//! Firecracker does not break the client.
//!
//! The contract test (`tests/contract.rs`) validates a body of every request type, with every
//! optional field set, against the definition.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `PUT /machine-config` (definition `MachineConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    /// Number of vCPUs, 1..=32 (1 or even with SMT).
    pub vcpu_count: u8,
    /// Guest memory, MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86 only; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Dirty page tracking, needed for diff snapshots (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated static CPU template (default `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Huge pages backing guest memory (default `None`, i.e. 4K pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfiguration {
    /// `vcpu_count` vCPUs and `mem_size_mib` MiB, everything else at Firecracker's defaults.
    pub fn new(vcpu_count: u8, mem_size_mib: u64) -> Self {
        Self {
            vcpu_count,
            mem_size_mib,
            smt: None,
            track_dirty_pages: None,
            cpu_template: None,
            huge_pages: None,
        }
    }
}

/// Definition `CpuTemplate` (deprecated by Firecracker; banger never sets one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::upper_case_acronyms,
    reason = "the wire names of the definition"
)]
pub enum CpuTemplate {
    /// C3.
    C3,
    /// T2.
    T2,
    /// T2S.
    T2S,
    /// T2CL.
    T2CL,
    /// T2A.
    T2A,
    /// V1N1.
    V1N1,
    /// No template.
    None,
}

/// `MachineConfiguration.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4K pages.
    None,
    /// Transparent huge pages (madvise).
    Transparent,
    /// Explicit 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// `PUT /boot-source` (definition `BootSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the guest kernel.
    pub kernel_image_path: PathBuf,
    /// Kernel command line (banger puts the `ip=` argument here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Host path of an initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

/// `PUT /drives/{drive_id}` (definition `Drive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Drive id; also the path parameter, and the two must agree.
    pub drive_id: String,
    /// Whether the guest boots from it.
    pub is_root_device: bool,
    /// Host path of the backing file (virtio-block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    /// Read-only (virtio-block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Boot partition's unique id (root device only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Caching strategy (default `Unsafe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// I/O engine (default `Sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// I/O rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// vhost-user-block backend socket (instead of `path_on_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl Drive {
    /// A virtio-block drive backed by `path`.
    pub fn new(
        drive_id: impl Into<String>,
        path: impl Into<PathBuf>,
        is_root_device: bool,
        is_read_only: bool,
    ) -> Self {
        Self {
            drive_id: drive_id.into(),
            is_root_device,
            path_on_host: Some(path.into()),
            is_read_only: Some(is_read_only),
            partuuid: None,
            cache_type: None,
            io_engine: None,
            rate_limiter: None,
            socket: None,
        }
    }
}

/// `Drive.cache_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are not forwarded to the host.
    Unsafe,
    /// Flushes are forwarded (fsync on the backing file).
    Writeback,
}

/// `Drive.io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking I/O.
    Sync,
    /// io_uring.
    Async,
}

/// Definition `RateLimiter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bytes per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// Definition `TokenBucket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Tokens the bucket holds.
    pub size: u64,
    /// Milliseconds to refill it.
    pub refill_time: u64,
    /// Initial burst, tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
}

/// `PUT /network-interfaces/{iface_id}` (definition `NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Interface id; also the path parameter, and the two must agree.
    pub iface_id: String,
    /// The host tap Firecracker opens (netd created it).
    pub host_dev_name: String,
    /// The guest's MAC, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// MTU advertised to the guest, 68..=65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Receive rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl NetworkInterface {
    /// Interface `iface_id` on host tap `host_dev_name` with guest MAC `guest_mac`.
    pub fn new(
        iface_id: impl Into<String>,
        host_dev_name: impl Into<String>,
        guest_mac: impl Into<String>,
    ) -> Self {
        Self {
            iface_id: iface_id.into(),
            host_dev_name: host_dev_name.into(),
            guest_mac: Some(guest_mac.into()),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

/// `PUT /vsock` (definition `Vsock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest CID, >= 3.
    pub guest_cid: u32,
    /// The host Unix socket of the hybrid vsock (`CONNECT <port>` on it).
    pub uds_path: PathBuf,
    /// Deprecated by Firecracker; banger never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

impl Vsock {
    /// Guest CID `guest_cid`, host socket `uds_path`.
    pub fn new(guest_cid: u32, uds_path: impl Into<PathBuf>) -> Self {
        Self {
            guest_cid,
            uds_path: uds_path.into(),
            vsock_id: None,
        }
    }
}

/// `PUT /actions` (definition `InstanceActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// Which action.
    pub action_type: ActionType,
}

impl InstanceActionInfo {
    /// Boot the configured guest.
    pub const INSTANCE_START: Self = Self {
        action_type: ActionType::InstanceStart,
    };
    /// Press Ctrl+Alt+Del on the guest's keyboard (a guest booted with `reboot=k` then exits).
    pub const SEND_CTRL_ALT_DEL: Self = Self {
        action_type: ActionType::SendCtrlAltDel,
    };
    /// Write the metrics now.
    pub const FLUSH_METRICS: Self = Self {
        action_type: ActionType::FlushMetrics,
    };
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Flush metrics.
    FlushMetrics,
    /// Start the guest.
    InstanceStart,
    /// Send Ctrl+Alt+Del.
    SendCtrlAltDel,
}

/// `GET /` (definition `InstanceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name.
    pub app_name: String,
    /// Instance id (`--id`).
    pub id: String,
    /// Instance state.
    pub state: InstanceState,
    /// VMM version; the simulator's contains `banger-fcsim (simulator)`.
    pub vmm_version: String,
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configured or being configured, not booted.
    #[serde(rename = "Not started")]
    NotStarted,
    /// Booted and running.
    Running,
    /// Booted and paused.
    Paused,
}

/// `GET /version` (definition `FirecrackerVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    /// Build version.
    pub firecracker_version: String,
}

/// `PUT /logger` (definition `Logger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Log level (default `Info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// File or named pipe for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// Print the level on each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Print the source location on each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only log this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and up.
    Warning,
    /// Info and up.
    Info,
    /// Debug and up.
    Debug,
    /// Everything.
    Trace,
    /// Nothing.
    Off,
}

/// `PUT /metrics` (definition `Metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// File or named pipe the JSON metrics lines go to.
    pub metrics_path: PathBuf,
    /// Put the instance id on each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Extra key-value pairs on each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// `PATCH /vm` (definition `Vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// The wanted state.
    pub state: VmState,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Pause the vCPUs.
    Paused,
    /// Resume them.
    Resumed,
}

/// `PUT /snapshot/create` (definition `SnapshotCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Where guest memory is written.
    pub mem_file_path: PathBuf,
    /// Where the microVM state is written.
    pub snapshot_path: PathBuf,
    /// Full (default) or diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// All of guest memory.
    Full,
    /// Pages dirtied since the last snapshot.
    Diff,
}

/// `PUT /snapshot/load` (definition `SnapshotLoadParams`). Exactly one of `mem_file_path` and
/// `mem_backend` must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// The microVM state file.
    pub snapshot_path: PathBuf,
    /// Deprecated: the guest memory file (use `mem_backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<PathBuf>,
    /// Where guest memory comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// Deprecated spelling of `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Track dirty pages after the load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// Host taps to use instead of the ones in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    /// A vsock socket path to use instead of the one in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// Advance kvmclock by the wall-clock time since the snapshot (x86_64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
    /// Huge pages of the restored VM (default: as in the snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<SnapshotHugePages>,
}

impl SnapshotLoadParams {
    /// Load `snapshot_path` with memory from the file `mem_path`, optionally resuming.
    pub fn from_file(
        snapshot_path: impl Into<PathBuf>,
        mem_path: impl Into<PathBuf>,
        resume_vm: bool,
    ) -> Self {
        Self {
            snapshot_path: snapshot_path.into(),
            mem_file_path: None,
            mem_backend: Some(MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: mem_path.into(),
            }),
            enable_diff_snapshots: None,
            track_dirty_pages: None,
            resume_vm: Some(resume_vm),
            network_overrides: None,
            vsock_override: None,
            clock_realtime: None,
            huge_pages: None,
        }
    }
}

/// Definition `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// File or userfaultfd.
    pub backend_type: MemoryBackendType,
    /// The memory file, or the UFFD handler's socket.
    pub backend_path: PathBuf,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// A memory file.
    File,
    /// A userfaultfd handler.
    Uffd,
}

/// Definition `NetworkOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface in the snapshot.
    pub iface_id: String,
    /// The host tap to use now.
    pub host_dev_name: String,
}

/// Definition `VsockOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// The vsock socket path to use now.
    pub uds_path: PathBuf,
}

/// `SnapshotLoadParams.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotHugePages {
    /// As recorded in the snapshot.
    Snapshot,
    /// Regular pages.
    None,
    /// Transparent huge pages.
    Transparent,
    /// Explicit 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Definition `Error`: the body of every Firecracker error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// What went wrong.
    #[serde(default)]
    pub fault_message: String,
}
