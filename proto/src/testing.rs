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

/// The pinned JSON of every operation (`fixtures/wire.json`): keyed by the operation's
/// documented subject (`<p>.host.<host>.vm.health`), each `{"request": ..., "reply": ...}`
/// as the code sent it before operations became types. Written for prefix `banger` and host
/// `lab1` (see [`sample_at`]).
pub const WIRE_FIXTURES: &str = include_str!("../fixtures/wire.json");

/// The fixtures of [`WIRE_FIXTURES`], parsed.
///
/// # Panics
/// When the file is not a JSON object: a broken fixture is a broken test.
pub fn wire_fixtures() -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(WIRE_FIXTURES) {
        Ok(serde_json::Value::Object(m)) => m,
        other => panic!("fixtures/wire.json is not a JSON object: {other:?}"),
    }
}

/// The address the fixtures are written for: [`Lab`](crate::op::Lab) or host `lab1`.
///
/// # Panics
/// For a scope that is neither (there is none).
#[allow(
    clippy::unwrap_used,
    reason = "test fixture: the host name is a valid literal"
)]
pub fn sample_at<A: crate::op::Scope>() -> A {
    use std::any::Any;
    let lab = crate::op::Lab;
    let host = HostId::new("lab1").unwrap();
    let any: [&dyn Any; 2] = [&lab, &host];
    any.iter()
        .find_map(|a| a.downcast_ref::<A>())
        .cloned()
        .unwrap_or_else(|| panic!("an operation addressed to neither the lab nor a host"))
}

/// The subject an operation's fixture key names at prefix `banger`, host `lab1`: what a client
/// built before operations became types (or `nats req`) sends to.
pub fn fixture_subject(key: &str) -> String {
    key.replace("<p>", "banger").replace("<host>", "lab1")
}
