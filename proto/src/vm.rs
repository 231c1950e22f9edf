//! VM records, the VM state machine, and the vm-controller's requests and replies.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{CpuCount, HostId, ImageName, MemMib, VmId, VmName};
use crate::net::PortForward;

/// The state of a VM. The allowed transitions live in [`VmState::can_become`] and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// The record exists; volumes and network are being prepared.
    Creating,
    /// Not running; volumes and lease kept.
    Stopped,
    /// The hypervisor is being spawned and configured.
    Starting,
    /// The guest was started.
    Running,
    /// A stop is in progress.
    Stopping,
    /// An operation failed; the record says why. Start or delete it.
    Failed,
    /// Being removed.
    Deleting,
}

impl VmState {
    /// Every state.
    pub const ALL: &'static [VmState] = &[
        Self::Creating,
        Self::Stopped,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Failed,
        Self::Deleting,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Failed => "failed",
            Self::Deleting => "deleting",
        }
    }

    /// Whether a VM in `self` may move to `next`.
    pub fn can_become(self, next: VmState) -> bool {
        use VmState::*;
        matches!(
            (self, next),
            (Creating, Starting | Stopped | Failed | Deleting)
                | (Stopped, Starting | Deleting)
                | (Starting, Running | Stopping | Stopped | Failed)
                | (Running, Stopping | Stopped | Failed)
                | (Stopping, Stopped | Failed)
                | (Failed, Starting | Stopping | Stopped | Deleting)
                | (Deleting, Failed)
        )
    }

    /// Whether a hypervisor process may exist in this state.
    pub fn may_have_process(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Stopping | Self::Failed
        )
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Network details of a VM, once netd has attached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNetwork {
    /// Guest IPv4 address.
    pub ip: String,
    /// Guest MAC address.
    pub mac: String,
    /// Host tap device.
    pub tap: String,
}

/// The full snapshot of a VM: what `vm show` prints and what every event carries, so no
/// consumer needs a second round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Unique id.
    pub id: VmId,
    /// Unique name (per lab).
    pub name: VmName,
    /// The host whose controller owns the VM.
    pub host: HostId,
    /// Current state.
    pub state: VmState,
    /// Image it boots.
    pub image: ImageName,
    /// vCPUs, applied at start.
    pub cpus: CpuCount,
    /// Memory in MiB, applied at start.
    pub memory_mib: MemMib,
    /// Work disk size in MiB.
    pub disk_mib: MemMib,
    /// Network, when attached.
    pub network: Option<VmNetwork>,
    /// Port forwards from the host to the guest.
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
    /// Why the VM is `failed`, or the last forced-path note.
    pub reason: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
    /// Last start, milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// Last `touch`, milliseconds since the Unix epoch.
    pub touched_at_ms: Option<u64>,
}

/// `vm.create`. Omitted values mean the controller's defaults; explicit zero or negative
/// values do not deserialise, so they can never reach a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// Name of the new VM.
    pub name: VmName,
    /// Image; the controller's default image when omitted.
    #[serde(default)]
    pub image: Option<ImageName>,
    /// vCPUs; default when omitted.
    #[serde(default)]
    pub cpus: Option<CpuCount>,
    /// Memory in MiB; default when omitted.
    #[serde(default)]
    pub memory_mib: Option<MemMib>,
    /// Work disk size in MiB; the image's default when omitted.
    #[serde(default)]
    pub disk_mib: Option<MemMib>,
    /// Place on this host; any host (queue group) when omitted.
    #[serde(default)]
    pub host: Option<HostId>,
    /// Start the VM after creating it (default true).
    #[serde(default = "default_true")]
    pub start: bool,
    /// Port forwards to install while the VM runs.
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
}

fn default_true() -> bool {
    true
}

/// A request naming one VM by full id: start, stop, restart, kill, delete, get, health,
/// stats, touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRefRequest {
    /// The VM.
    pub id: VmId,
}

/// `vm.set`: change settings applied on the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVmRequest {
    /// The VM.
    pub id: VmId,
    /// New vCPU count.
    #[serde(default)]
    pub cpus: Option<CpuCount>,
    /// New memory size.
    #[serde(default)]
    pub memory_mib: Option<MemMib>,
    /// New work disk size (grow only).
    #[serde(default)]
    pub disk_mib: Option<MemMib>,
}

/// The reply of every lifecycle operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOpReply {
    /// The VM after the operation.
    pub vm: VmInfo,
    /// Something the user should know (for example: the guest ignored CtrlAltDel and was
    /// stopped by force).
    #[serde(default)]
    pub note: Option<String>,
    /// The replier's hypervisor (`firecracker`, `sim`), on a create's answer: the CLI's
    /// SIMULATED banner when the create named its host (no discovery ran to say it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<String>,
}

impl VmOpReply {
    /// A reply with `vm` and `note`, not saying which hypervisor runs it.
    pub fn new(vm: VmInfo, note: Option<String>) -> Self {
        Self {
            vm,
            note,
            vmm: None,
        }
    }
}

/// `vm.list` request (scatter-gather).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListVmsRequest {
    /// Only the VMs these references could name: a VM whose name equals a ref, whose id
    /// equals it or whose id starts with it (the CLI resolving `vm stop web 3f2a`). Empty:
    /// every VM (and the request's JSON is `{}`, as before the field existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
}

impl ListVmsRequest {
    /// A request for the VMs `refs` could name.
    pub fn matching(refs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            refs: refs.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `vm` passes the filter (every VM does when there is none). The caller still
    /// resolves: a ref that is a name of one VM and an id prefix of another returns both.
    pub fn wants(&self, vm: &VmInfo) -> bool {
        self.refs.is_empty() || self.refs.iter().any(|r| could_name(r, vm))
    }
}

/// Whether `reference` could name `vm`: its name, its id, or a prefix of its id (what the CLI
/// then resolves; see [`ListVmsRequest::wants`]).
pub fn could_name(reference: &str, vm: &VmInfo) -> bool {
    vm.name.as_str() == reference
        || (!reference.is_empty() && vm.id.as_str().starts_with(reference))
}

/// One controller's answer to `vm.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListVmsReply {
    /// The answering host.
    pub host: HostId,
    /// Its VMs (those the request's refs could name, when it has any).
    pub vms: Vec<VmInfo>,
    /// The hosts whose controller is alive as the replier knows it (its heartbeat in the
    /// controllers bucket, [`controller_bucket`]), the replier included: a gather can end as
    /// soon as each of them answered. Absent from a controller older than the field, or one
    /// that does not know (no JetStream, the bucket unread): the caller then discovers the
    /// controllers itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// The lab's members as the replier knows them (netd's subnet claims): `Some([])` when
    /// it is not in a lab, `None` when it does not know. A member that does not answer is
    /// named unreachable; the caller does not wait for a member whose controller has no
    /// heartbeat (it is known not to be there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// The replier's hypervisor (`firecracker`, `sim`), as its service metadata says: the
    /// CLI's SIMULATED banner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<String>,
}

impl ListVmsReply {
    /// A reply of `host` with `vms` and nothing known about the other hosts.
    pub fn new(host: HostId, vms: Vec<VmInfo>) -> Self {
        Self {
            host,
            vms,
            peers: None,
            members: None,
            vmm: None,
        }
    }
}

/// The JetStream key-value bucket in which every live vm-controller keeps a heartbeat:
/// `banger` -> `BANGER_VM_CONTROLLERS`. Key: the host id; value: a [`ControllerBeat`]. The
/// bucket's `max_age` is a few beats long, so a controller that dies without deleting its key
/// (killed, cut off) leaves it within seconds.
pub fn controller_bucket(prefix: &str) -> String {
    crate::subject::jetstream_name(prefix, "VM_CONTROLLERS")
}

/// One vm-controller's heartbeat value in [`controller_bucket`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerBeat {
    /// The controller's host.
    pub host: HostId,
    /// Its hypervisor (`firecracker`, `sim`).
    pub vmm: String,
    /// Its version.
    pub version: String,
    /// When it wrote this beat (ms since the epoch).
    pub at_ms: u64,
}

/// The JetStream key-value bucket that makes VM names unique across a lab: `banger` ->
/// `BANGER_VM_NAMES`. Key: the VM's name; value: a [`NameEntry`]. A controller creates the key
/// (only if absent) before it records a new VM, and deletes it with the VM.
pub fn name_bucket(prefix: &str) -> String {
    crate::subject::jetstream_name(prefix, "VM_NAMES")
}

/// Who holds a name in [`name_bucket`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The name (also the key).
    pub name: VmName,
    /// The host whose controller holds it.
    pub host: HostId,
    /// The VM.
    pub id: VmId,
}

/// Which log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The guest's serial console.
    #[default]
    Serial,
    /// The hypervisor's own log.
    Vmm,
}

/// `vm.logs`: read a window of a log, from `offset` (or the last `tail_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// The VM.
    pub id: VmId,
    /// Which log.
    #[serde(default)]
    pub source: LogSource,
    /// Byte offset to read from; `None` reads the tail.
    #[serde(default)]
    pub offset: Option<u64>,
    /// How many bytes at most.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// `vm.logs` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReply {
    /// The text read (lossy UTF-8).
    pub data: String,
    /// Offset of the byte after `data`: pass it back to follow.
    pub next_offset: u64,
}

/// `vm.stats` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStats {
    /// The VM.
    pub id: VmId,
    /// Hypervisor process resident memory, bytes.
    pub vmm_rss_bytes: Option<u64>,
    /// Hypervisor CPU time, milliseconds.
    pub vmm_cpu_ms: Option<u64>,
    /// Guest health as reported by the agent.
    pub guest: Option<crate::agent::Health>,
    /// The hypervisor's own metrics: the latest line it wrote after a `FlushMetrics`
    /// (Firecracker's metrics JSON), when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm_metrics: Option<serde_json::Value>,
}

/// `vm.exec`: run a command in the guest through the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmExecRequest {
    /// The VM.
    pub id: VmId,
    /// The command.
    pub exec: crate::agent::ExecRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_transition_is_pinned() {
        use VmState::*;
        // The complete table, so a change to the state machine is a visible change here.
        let allowed: &[(VmState, &[VmState])] = &[
            (Creating, &[Starting, Stopped, Failed, Deleting]),
            (Stopped, &[Starting, Deleting]),
            (Starting, &[Running, Stopping, Stopped, Failed]),
            (Running, &[Stopping, Stopped, Failed]),
            (Stopping, &[Stopped, Failed]),
            (Failed, &[Starting, Stopping, Stopped, Deleting]),
            (Deleting, &[Failed]),
        ];
        for (from, tos) in allowed {
            for to in VmState::ALL {
                assert_eq!(from.can_become(*to), tos.contains(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn create_request_rejects_non_positive_values() {
        let ok: CreateVmRequest = serde_json::from_str(r#"{"name":"web"}"#).unwrap();
        assert!(ok.start && ok.cpus.is_none() && ok.memory_mib.is_none());
        for bad in [
            r#"{"name":"web","cpus":0}"#,
            r#"{"name":"web","cpus":-2}"#,
            r#"{"name":"web","memory_mib":0}"#,
            r#"{"name":"web","memory_mib":-512}"#,
            r#"{"name":"Web"}"#,
            r#"{"name":"web","surprise":1}"#,
        ] {
            assert!(
                serde_json::from_str::<CreateVmRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn vm_info_round_trips() {
        let info = crate::testing::vm_info("web", "0123456789abcdef0123456789abcdef", "h1");
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(json["network"]["ip"], "172.16.0.2");
        assert_eq!(serde_json::from_value::<VmInfo>(json).unwrap(), info);
    }
}
