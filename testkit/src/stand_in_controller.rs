//! A stand-in vm-controller on a real bus, and the VM snapshots and lifecycle events a real
//! one publishes: for tests and benchmarks of the services that consume them (dnsd, the CLI)
//! without a controller, a hypervisor or root.
//!
//! - [`vm`] / [`running`]: a [`VmInfo`] as a controller reports it.
//! - [`publish`]: a lifecycle event for a VM, as its controller would publish it.
//! - [`FakeController`]: registered under the service API as `vm-controller` for one host (so
//!   `$SRV.PING` finds it), answering `vm.list` with whatever it holds at the time.
//! - [`bus`]: a plain bus client for the test itself.

#![allow(
    clippy::unwrap_used,
    reason = "test and benchmark helpers: a bus that cannot be reached is a failed run"
)]

use std::sync::{Arc, Mutex};

use banger_bus::Bus;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::op::{Lab, vm};
use banger_proto::vm::{ListVmsReply, VmInfo, VmNetwork, VmState};
use banger_proto::{
    ApiError, CpuCount, ErrorCode, HostId, ImageName, MemMib, Subjects, VmId, VmName,
};

use crate::NatsServer;

/// A VM snapshot as a controller would publish it.
pub fn vm(n: u32, name: &str, host: &str, state: VmState, ip: Option<&str>) -> VmInfo {
    let now = banger_bus::now_ms();
    VmInfo {
        id: VmId::new(format!("{n:032x}")).unwrap(),
        name: VmName::new(name).unwrap(),
        host: HostId::new(host).unwrap(),
        state,
        image: ImageName::new("debian").unwrap(),
        cpus: CpuCount::new(1).unwrap(),
        memory_mib: MemMib::new(512).unwrap(),
        disk_mib: MemMib::new(1024).unwrap(),
        network: ip.map(|ip| VmNetwork {
            ip: ip.to_owned(),
            mac: "06:00:ac:10:00:02".into(),
            tap: format!("bgr{n:x}"),
        }),
        port_forwards: vec![],
        reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        started_at_ms: Some(now),
        touched_at_ms: None,
    }
}

/// A running VM with an address.
pub fn running(n: u32, name: &str, host: &str, ip: &str) -> VmInfo {
    vm(n, name, host, VmState::Running, Some(ip))
}

/// Publishes a lifecycle event for `vm` as its controller would.
pub async fn publish(bus: &Bus, kind: EventKind, seq: u64, vm: &VmInfo) {
    let mut vm = vm.clone();
    vm.updated_at_ms = banger_bus::now_ms();
    let event = VmEvent {
        kind,
        at_ms: vm.updated_at_ms,
        seq,
        vm: vm.clone(),
    };
    bus.publish_event(&vm.host, &event).await.unwrap();
    bus.client().flush().await.unwrap();
}

/// A plain bus client for the test itself.
pub async fn bus(nats: &NatsServer) -> Bus {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Bus::new(client, Subjects::default())
}

/// A stand-in vm-controller for host `host`: registered under the service API as
/// `vm-controller` (so `$SRV.PING` finds it) and, when `answers` is true, answering `vm.list`
/// with whatever `vms` holds at the time, and `vm.get` with one of them (or `not_found`).
pub struct FakeController {
    /// The VMs `vm.list` answers with; change them with [`FakeController::set`].
    pub vms: Arc<Mutex<Vec<VmInfo>>>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeController {
    /// Starts the stand-in for `host` holding `vms`; it answers `vm.list` only when `answers`
    /// is true (false: a controller that is registered but does not answer in time).
    pub async fn start(nats: &NatsServer, host: &str, vms: Vec<VmInfo>, answers: bool) -> Self {
        let bus = bus(nats).await;
        let host_id = HostId::new(host).unwrap();
        let spec = ServiceSpec::new(
            banger_proto::service::VM_CONTROLLER,
            "test stand-in",
            &host_id,
        );
        let mut svc = ServiceHost::start(&bus, spec).await.unwrap();
        let vms = Arc::new(Mutex::new(vms));
        if answers {
            let list = vms.clone();
            svc.serve(vm::List, &Lab, host_id.clone(), move |host, _| {
                let reply = ListVmsReply::new(host, list.lock().unwrap().clone());
                async move { Ok(reply) }
            })
            .await
            .unwrap();
            let held = vms.clone();
            svc.serve(vm::Get, &host_id, (), move |(), req| {
                let found = held
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|v| v.id == req.id)
                    .cloned()
                    .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no vm {}", req.id)));
                async move { found }
            })
            .await
            .unwrap();
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(svc.run(shutdown.clone()));
        Self {
            vms,
            shutdown,
            task: Some(task),
        }
    }

    /// Replaces the VMs it answers with.
    pub fn set(&self, vms: Vec<VmInfo>) {
        *self.vms.lock().unwrap() = vms;
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
