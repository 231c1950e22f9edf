//! Fixtures for tests of crates that speak the contract (feature `testing`): one well-formed
//! VM snapshot and event, so every test suite does not spell out a `VmInfo` of its own.

use crate::event::{EventKind, VmEvent};
use crate::vm::{VmInfo, VmNetwork, VmState};
use crate::{CpuCount, HostId, ImageName, MemMib, VmId, VmName};

/// A running VM `name` with id `id` (32 hex digits) on `host`: 2 vCPUs, 1 GiB, image `debian`,
/// address 172.16.0.2.
///
/// # Panics
/// When `name`, `id` or `host` are not valid: a fixture with bad input is a broken test.
#[allow(
    clippy::unwrap_used,
    reason = "test fixture: invalid input is a broken test"
)]
pub fn vm_info(name: &str, id: &str, host: &str) -> VmInfo {
    VmInfo {
        id: VmId::new(id).unwrap(),
        name: VmName::new(name).unwrap(),
        host: HostId::new(host).unwrap(),
        state: VmState::Running,
        image: ImageName::new("debian").unwrap(),
        cpus: CpuCount::new(2).unwrap(),
        memory_mib: MemMib::new(1024).unwrap(),
        disk_mib: MemMib::new(4096).unwrap(),
        network: Some(VmNetwork {
            ip: "172.16.0.2".into(),
            mac: "06:00:ac:10:00:02".into(),
            tap: "bgr0123456789ab".into(),
        }),
        port_forwards: vec![],
        reason: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        started_at_ms: Some(0),
        touched_at_ms: None,
    }
}

/// A `kind` event of [`vm_info`]`(name, id, host)` with sequence number `seq`, stamped `at_ms`.
pub fn vm_event(
    name: &str,
    id: &str,
    host: &str,
    kind: EventKind,
    seq: u64,
    at_ms: u64,
) -> VmEvent {
    VmEvent {
        kind,
        at_ms,
        seq,
        vm: vm_info(name, id, host),
    }
}
