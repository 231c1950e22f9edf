//! Doubles of the controller's peers and hypervisor, and a harness that serves a controller
//! built from them on a real nats-server with a real SQLite database.
//!
//! The doubles record what they were asked to do, so tests assert on outcomes ("the tap is
//! gone", "the volumes were deleted") rather than on call sequences.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::shutdown::CancellationToken;
use banger_proto::agent::{ExecRequest, ExecResult, Health};
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::net::{AttachRequest, DetachReply, DetachRequest, Lease};
use banger_proto::op::{Lab, Operation, vm};
use banger_proto::store::{ImageInfo, VolumeCreateRequest, VolumeDeleteReply, VolumeSet};
use banger_proto::vm::{CreateVmRequest, VmInfo, VmOpReply, VmRefRequest};
use banger_proto::{ApiError, ErrorCode, HostId, ImageName, MemMib, Subjects, VmId, VmName};
use banger_testkit::NatsServer;
use banger_vm_controller::config::{ControllerConfig, Dirs, VmPaths, VmmKind};
use banger_vm_controller::deps::{AgentApi, Claim, DepError, EventSink, LabApi, NetApi, StoreApi};
use banger_vm_controller::store::Store;
use banger_vm_controller::vmm::{LaunchSpec, ProcUsage, Vmm, VmmError};
use banger_vm_controller::{Controller, ControllerParts};
use futures::future::BoxFuture;

/// The host id every harness uses.
pub const HOST: &str = "h1";

/// How a fake hypervisor process misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Spawning fails.
    FailLaunch,
    /// Configuration (or InstanceStart) fails.
    FailConfigure,
    /// The guest ignores CtrlAltDel.
    IgnoreCtrlAltDel,
}

#[derive(Debug, Clone)]
pub struct FakeProc {
    pub name: String,
    pub socket: PathBuf,
    pub alive: bool,
    pub killed: bool,
}

#[derive(Debug, Default)]
pub struct VmmState {
    pub next_pid: u32,
    pub procs: HashMap<u32, FakeProc>,
    pub launches: Vec<LaunchSpec>,
    pub ctrl_alt_dels: Vec<String>,
    pub faults: HashMap<String, Fault>,
}

/// A hypervisor double: processes are entries in a table, "found" by their API socket path.
#[derive(Clone)]
pub struct FakeVmm {
    pub state: Arc<Mutex<VmmState>>,
    /// How long a guest takes to shut down after CtrlAltDel.
    pub shutdown_delay: Duration,
}

impl FakeVmm {
    pub fn new(shutdown_delay: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(VmmState {
                next_pid: 4_000_000,
                ..Default::default()
            })),
            shutdown_delay,
        }
    }

    pub fn fault(&self, name: &str, f: Fault) {
        self.state.lock().unwrap().faults.insert(name.into(), f);
    }

    /// Live processes of VM `name`.
    pub fn live(&self, name: &str) -> Vec<u32> {
        let s = self.state.lock().unwrap();
        s.procs
            .iter()
            .filter(|(_, p)| p.alive && p.name == name)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Every live process.
    pub fn live_count(&self) -> usize {
        let s = self.state.lock().unwrap();
        s.procs.values().filter(|p| p.alive).count()
    }

    /// Makes VM `name`'s process vanish (a crash).
    pub fn crash(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        for p in s.procs.values_mut().filter(|p| p.name == name) {
            p.alive = false;
        }
    }

    pub fn killed(&self, name: &str) -> bool {
        let s = self.state.lock().unwrap();
        s.procs.values().any(|p| p.name == name && p.killed)
    }

    pub fn last_launch(&self, name: &str) -> Option<LaunchSpec> {
        let s = self.state.lock().unwrap();
        s.launches.iter().rev().find(|l| l.name == name).cloned()
    }

    fn fault_of(&self, name: &str) -> Option<Fault> {
        self.state.lock().unwrap().faults.get(name).copied()
    }
}

impl Vmm for FakeVmm {
    fn kind(&self) -> VmmKind {
        VmmKind::Sim
    }

    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> BoxFuture<'a, Result<u32, VmmError>> {
        Box::pin(async move {
            if self.fault_of(&spec.name) == Some(Fault::FailLaunch) {
                return Err(VmmError::Spawn {
                    bin: "fake".into(),
                    source: std::io::Error::other("injected launch fault"),
                });
            }
            std::fs::create_dir_all(&spec.paths.log_dir).unwrap();
            std::fs::write(&spec.paths.serial_log, format!("boot {}\n", spec.name)).unwrap();
            let mut s = self.state.lock().unwrap();
            s.next_pid += 1;
            let pid = s.next_pid;
            s.procs.insert(
                pid,
                FakeProc {
                    name: spec.name.clone(),
                    socket: spec.paths.api_sock.clone(),
                    alive: true,
                    killed: false,
                },
            );
            s.launches.push(spec.clone());
            Ok(pid)
        })
    }

    fn configure_and_start<'a>(
        &'a self,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<(), VmmError>> {
        Box::pin(async move {
            if self.fault_of(&spec.name) == Some(Fault::FailConfigure) {
                return Err(VmmError::ExitedEarly {
                    status: "exit status: 1".into(),
                    log_tail: "injected configure fault".into(),
                });
            }
            Ok(())
        })
    }

    fn ctrl_alt_del<'a>(&'a self, paths: &'a VmPaths) -> BoxFuture<'a, Result<(), VmmError>> {
        Box::pin(async move {
            let (pid, name) = {
                let mut s = self.state.lock().unwrap();
                let found = s
                    .procs
                    .iter()
                    .find(|(_, p)| p.alive && p.socket == paths.api_sock)
                    .map(|(pid, p)| (*pid, p.name.clone()));
                let Some((pid, name)) = found else {
                    return Err(VmmError::ApiSocket {
                        path: paths.api_sock.clone(),
                        waited_ms: 0,
                    });
                };
                s.ctrl_alt_dels.push(name.clone());
                (pid, name)
            };
            if self.fault_of(&name) != Some(Fault::IgnoreCtrlAltDel) {
                let state = self.state.clone();
                let delay = self.shutdown_delay;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(p) = state.lock().unwrap().procs.get_mut(&pid) {
                        p.alive = false;
                    }
                });
            }
            Ok(())
        })
    }

    fn find_process<'a>(
        &'a self,
        paths: &'a VmPaths,
        _hint: Option<u32>,
    ) -> BoxFuture<'a, Option<u32>> {
        Box::pin(async move {
            let s = self.state.lock().unwrap();
            s.procs
                .iter()
                .find(|(_, p)| p.alive && p.socket == paths.api_sock)
                .map(|(pid, _)| *pid)
        })
    }

    fn kill(&self, pid: u32, paths: &VmPaths) -> Result<bool, VmmError> {
        match self.state.lock().unwrap().procs.get_mut(&pid) {
            Some(p) if p.alive && p.socket == paths.api_sock => {
                p.alive = false;
                p.killed = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn is_alive(&self, pid: u32) -> bool {
        self.state
            .lock()
            .unwrap()
            .procs
            .get(&pid)
            .is_some_and(|p| p.alive)
    }

    fn usage(&self, pid: u32) -> Option<ProcUsage> {
        self.is_alive(pid).then_some(ProcUsage {
            rss_bytes: 1 << 20,
            cpu_ms: 7,
        })
    }
}

#[derive(Debug, Default)]
pub struct StordState {
    pub images: HashMap<ImageName, ImageInfo>,
    pub volumes: HashMap<VmId, VolumeSet>,
    pub deletes: usize,
    pub fail_create: bool,
    /// How many of the next volume deletions fail as busy (after stord's own retries).
    pub busy_deletes: u32,
}

/// A stord double.
#[derive(Clone, Default)]
pub struct FakeStord {
    pub state: Arc<Mutex<StordState>>,
}

pub fn image(name: &str) -> ImageInfo {
    ImageInfo {
        name: ImageName::new(name).unwrap(),
        kernel: "/images/vmlinux".into(),
        initrd: None,
        rootfs: "/images/rootfs.ext4".into(),
        kernel_args: "console=ttyS0 reboot=k panic=1 pci=off".into(),
        default_disk_mib: MemMib::new(1024).unwrap(),
        rootfs_bytes: 1 << 30,
        created_at_ms: 1,
    }
}

impl FakeStord {
    pub fn with_image(name: &str) -> Self {
        let s = Self::default();
        s.state
            .lock()
            .unwrap()
            .images
            .insert(ImageName::new(name).unwrap(), image(name));
        s
    }

    pub fn volume_count(&self) -> usize {
        self.state.lock().unwrap().volumes.len()
    }
}

fn dep(service: &'static str, op: &'static str, code: ErrorCode, m: &str) -> DepError {
    DepError::new(service, op, code, m)
}

impl StoreApi for FakeStord {
    fn image_show(&self, image: &ImageName) -> BoxFuture<'_, Result<ImageInfo, DepError>> {
        let r = self.state.lock().unwrap().images.get(image).cloned();
        Box::pin(async move {
            r.ok_or_else(|| dep("stord", "image.show", ErrorCode::NotFound, "no such image"))
        })
    }

    fn volume_create(
        &self,
        req: VolumeCreateRequest,
    ) -> BoxFuture<'_, Result<VolumeSet, DepError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            if s.fail_create {
                return Err(dep(
                    "stord",
                    "volume.create",
                    ErrorCode::Exhausted,
                    "disk full",
                ));
            }
            let img = s.images.get(&req.image).cloned().ok_or_else(|| {
                dep(
                    "stord",
                    "volume.create",
                    ErrorCode::NotFound,
                    "no such image",
                )
            })?;
            let set = s
                .volumes
                .entry(req.vm_id.clone())
                .or_insert_with(|| VolumeSet {
                    vm_id: req.vm_id.clone(),
                    image: req.image.clone(),
                    root_path: format!("/vols/{}/root", req.vm_id),
                    work_disk_path: format!("/vols/{}/work", req.vm_id),
                    disk_mib: req.disk_mib.unwrap_or(img.default_disk_mib),
                    kernel: img.kernel.clone(),
                    initrd: None,
                    kernel_args: img.kernel_args.clone(),
                    backend: "sparse-copy".into(),
                })
                .clone();
            Ok(set)
        })
    }

    fn volume_delete(&self, vm: &VmId) -> BoxFuture<'_, Result<VolumeDeleteReply, DepError>> {
        let vm = vm.clone();
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            s.deletes += 1;
            if s.busy_deletes > 0 {
                s.busy_deletes -= 1;
                return Err(dep(
                    "stord",
                    "volume.delete",
                    ErrorCode::Unavailable,
                    "root still busy after 5 attempts",
                ));
            }
            let removed = s.volumes.remove(&vm).is_some();
            Ok(VolumeDeleteReply {
                removed,
                attempts: 1,
            })
        })
    }

    fn volume_resize(
        &self,
        vm: &VmId,
        disk_mib: MemMib,
    ) -> BoxFuture<'_, Result<VolumeSet, DepError>> {
        let vm = vm.clone();
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            let v = s
                .volumes
                .get_mut(&vm)
                .ok_or_else(|| dep("stord", "volume.resize", ErrorCode::NotFound, "no volumes"))?;
            v.disk_mib = disk_mib;
            Ok(v.clone())
        })
    }
}

#[derive(Debug, Default)]
pub struct NetState {
    pub leases: HashMap<VmId, Lease>,
    pub taps: HashSet<VmId>,
    pub next: u8,
    /// How many of the next detaches fail transiently.
    pub failing_detaches: u32,
    /// Attaches fail (no free address).
    pub fail_attach: bool,
}

/// A netd double.
#[derive(Clone, Default)]
pub struct FakeNetd {
    pub state: Arc<Mutex<NetState>>,
}

impl FakeNetd {
    pub fn has_tap(&self, id: &VmId) -> bool {
        self.state.lock().unwrap().taps.contains(id)
    }

    pub fn has_lease(&self, id: &VmId) -> bool {
        self.state.lock().unwrap().leases.contains_key(id)
    }

    pub fn tap_count(&self) -> usize {
        self.state.lock().unwrap().taps.len()
    }

    pub fn lease_count(&self) -> usize {
        self.state.lock().unwrap().leases.len()
    }
}

impl NetApi for FakeNetd {
    fn attach(&self, req: AttachRequest) -> BoxFuture<'_, Result<Lease, DepError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            if s.fail_attach {
                return Err(dep(
                    "netd",
                    "net.attach",
                    ErrorCode::Exhausted,
                    "no free address",
                ));
            }
            if !s.leases.contains_key(&req.vm_id) {
                s.next += 1;
                let n = s.next + 1;
                let lease = Lease {
                    vm_id: req.vm_id.clone(),
                    vm_name: req.vm_name.clone(),
                    tap: format!("bgr{}", req.vm_id.short()),
                    mac: format!("06:00:ac:10:00:{n:02x}"),
                    ip: format!("172.16.0.{n}"),
                    prefix_len: 24,
                    gateway: "172.16.0.1".into(),
                    kernel_ip_arg: format!("ip=172.16.0.{n}::172.16.0.1:255.255.255.0::eth0:off"),
                    port_forwards: req.port_forwards.clone(),
                    tap_present: true,
                };
                s.leases.insert(req.vm_id.clone(), lease);
            }
            s.taps.insert(req.vm_id.clone());
            Ok(s.leases[&req.vm_id].clone())
        })
    }

    fn detach(&self, req: DetachRequest) -> BoxFuture<'_, Result<DetachReply, DepError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            if s.failing_detaches > 0 {
                s.failing_detaches -= 1;
                return Err(dep(
                    "netd",
                    "detach",
                    ErrorCode::Internal,
                    "netlink: listing interfaces: Device or resource busy",
                ));
            }
            let tap_removed = s.taps.remove(&req.vm_id);
            let released = req.release && s.leases.remove(&req.vm_id).is_some();
            Ok(DetachReply {
                tap_removed,
                released,
            })
        })
    }
}

/// An agent double.
#[derive(Clone)]
pub struct FakeAgent {
    /// Whether the agent answers (health and exec); `false` is a guest still booting.
    pub healthy: Arc<AtomicBool>,
    /// Health requests received.
    pub health_calls: Arc<std::sync::atomic::AtomicUsize>,
    /// Exec requests received.
    pub exec_calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for FakeAgent {
    fn default() -> Self {
        Self {
            healthy: Arc::new(AtomicBool::new(true)),
            health_calls: Arc::default(),
            exec_calls: Arc::default(),
        }
    }
}

impl AgentApi for FakeAgent {
    fn health(&self, _uds: PathBuf, _port: u32) -> BoxFuture<'_, Result<Health, DepError>> {
        let ok = self.healthy.load(Ordering::SeqCst);
        self.health_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if !ok {
                return Err(dep("agent", "health", ErrorCode::Unavailable, "no agent"));
            }
            Ok(Health {
                status: "ok".into(),
                uptime_secs: 1.0,
                hostname: "guest".into(),
                agent_version: "0".into(),
                boot_id: "b".into(),
                load: [0.0; 3],
                mem_total_bytes: 1,
                mem_available_bytes: 1,
                rootfs_total_bytes: 1,
                rootfs_free_bytes: 1,
            })
        })
    }

    fn exec(
        &self,
        _uds: PathBuf,
        _port: u32,
        req: ExecRequest,
    ) -> BoxFuture<'_, Result<ExecResult, DepError>> {
        let ok = self.healthy.load(Ordering::SeqCst);
        self.exec_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if !ok {
                return Err(dep("agent", "exec", ErrorCode::Unavailable, "no agent"));
            }
            Ok(ExecResult {
                exit_code: Some(0),
                signal: None,
                timed_out: false,
                stdout: req.argv.join(" "),
                stderr: String::new(),
            })
        })
    }
}

/// Other controllers' VM names, and what this controller asked of them.
#[derive(Clone, Default)]
pub struct FakeLab {
    pub names: Arc<Mutex<HashMap<VmName, (HostId, VmId)>>>,
    /// Names this controller claimed, adopted and released, in order (`claim web`, ...).
    pub calls: Arc<Mutex<Vec<String>>>,
}

impl FakeLab {
    fn call(&self, what: &str, name: &VmName) {
        self.calls.lock().unwrap().push(format!("{what} {name}"));
    }
}

impl LabApi for FakeLab {
    fn claim_name(&self, name: &VmName, _id: &VmId) -> BoxFuture<'_, Claim> {
        self.call("claim", name);
        let r = match self.names.lock().unwrap().get(name).cloned() {
            Some((host, id)) => Claim::Taken { host, id },
            None => Claim::Claimed,
        };
        Box::pin(async move { r })
    }

    fn adopt_name(&self, name: &VmName, _id: &VmId) -> BoxFuture<'_, ()> {
        self.call("adopt", name);
        Box::pin(async {})
    }

    fn release_name(&self, name: &VmName, _id: &VmId) -> BoxFuture<'_, ()> {
        self.call("release", name);
        Box::pin(async {})
    }

    fn sync_names(&self, _local: Vec<(VmName, VmId)>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Events collected from the bus, in arrival order.
#[derive(Clone, Default)]
pub struct EventLog {
    pub events: Arc<Mutex<Vec<VmEvent>>>,
}

impl EventLog {
    pub fn snapshot(&self) -> Vec<VmEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Kinds of VM `name`'s events, in sequence order.
    pub fn kinds(&self, name: &str) -> Vec<EventKind> {
        let mut evs: Vec<VmEvent> = self
            .snapshot()
            .into_iter()
            .filter(|e| e.vm.name.as_str() == name)
            .collect();
        evs.sort_by_key(|e| e.seq);
        evs.into_iter().map(|e| e.kind).collect()
    }
}

/// The doubles a harness is built from; kept across controller restarts.
#[derive(Clone)]
pub struct Fakes {
    pub vmm: FakeVmm,
    pub stord: FakeStord,
    pub netd: FakeNetd,
    pub agent: FakeAgent,
    pub lab: FakeLab,
    /// A real hypervisor implementation to use instead of [`FakeVmm`].
    pub real_vmm: Option<Arc<dyn Vmm>>,
    /// A real lab (the name directory) to use instead of [`FakeLab`].
    pub real_lab: Option<Arc<dyn LabApi>>,
}

impl Default for Fakes {
    fn default() -> Self {
        Self {
            vmm: FakeVmm::new(Duration::from_millis(50)),
            stord: FakeStord::with_image("debian"),
            netd: FakeNetd::default(),
            agent: FakeAgent::default(),
            lab: FakeLab::default(),
            real_vmm: None,
            real_lab: None,
        }
    }
}

/// Events onto the bus (the real sink, so trace headers and subjects are exercised).
pub fn bus_sink(bus: &Bus) -> Arc<dyn EventSink> {
    Arc::new(banger_vm_controller::deps::BusEvents {
        bus: bus.clone(),
        host: HostId::new(HOST).unwrap(),
    })
}

/// The config tests start from: short waits, no periodic reconcile.
pub fn test_config() -> ControllerConfig {
    ControllerConfig {
        vmm: VmmKind::Sim,
        stop_grace_ms: 5_000,
        kill_wait_ms: 2_000,
        reconcile_interval_ms: 0,
        ..ControllerConfig::default()
    }
}

/// A controller built from doubles, served on a real nats-server.
pub struct Harness {
    pub nats: NatsServer,
    pub bus: Bus,
    pub fakes: Fakes,
    pub ctl: Controller,
    pub events: EventLog,
    pub dir: tempfile::TempDir,
    pub config: ControllerConfig,
    shutdown: CancellationToken,
    serving: Option<tokio::task::JoinHandle<()>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(test_config(), Fakes::default()).await
    }

    pub async fn start_with(config: ControllerConfig, fakes: Fakes) -> Self {
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let bus = Bus::new(client, Subjects::default());
        let events = EventLog::default();
        let mut sub = bus
            .subscribe_events(bus.subjects().all_events(), None)
            .await
            .unwrap();
        bus.client().flush().await.unwrap();
        let log = events.clone();
        let listener = tokio::spawn(async move {
            while let Some(ev) = sub.next().await {
                log.events.lock().unwrap().push(ev.event);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ctl = build(&dir, &bus, &config, &fakes);
        let mut h = Self {
            nats,
            bus,
            fakes,
            ctl,
            events,
            dir,
            config,
            shutdown: CancellationToken::new(),
            serving: None,
            listener,
        };
        h.serve().await;
        h
    }

    async fn serve(&mut self) {
        let token = CancellationToken::new();
        self.shutdown = token.clone();
        let (ctl, bus) = (self.ctl.clone(), self.bus.clone());
        self.serving = Some(tokio::spawn(async move {
            banger_vm_controller::serve(ctl, &bus, None, token)
                .await
                .unwrap();
        }));
        let bus = self.bus.clone();
        banger_testkit::wait_until(
            "the controller answers vm.list",
            Duration::from_secs(10),
            || {
                let bus = bus.clone();
                async move {
                    bus.call::<vm::List>(
                        &Lab,
                        &banger_proto::vm::ListVmsRequest::default(),
                        Duration::from_millis(500),
                    )
                    .await
                    .is_ok()
                }
            },
        )
        .await;
    }

    /// Stops serving (a controller shutdown; processes keep running) and starts a new
    /// controller on the same database and doubles.
    pub async fn restart_controller(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.serving.take() {
            t.await.unwrap();
        }
        self.ctl = build(&self.dir, &self.bus, &self.config, &self.fakes);
        self.serve().await;
    }

    /// Restarts the controller with `lab` instead of the fake one.
    pub async fn rebuild_with_lab(&mut self, lab: Arc<dyn LabApi>) {
        self.fakes.real_lab = Some(lab);
        self.restart_controller().await;
    }

    /// Stops serving cleanly (SIGTERM's path), without starting another controller.
    pub async fn stop_controller(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.serving.take() {
            t.await.unwrap();
        }
    }

    pub fn host(&self) -> HostId {
        HostId::new(HOST).unwrap()
    }

    /// Operation `O` of this host's controller: its reply, or the error it answered (a
    /// transport failure fails the test).
    pub async fn call<O: Operation<At = HostId>>(
        &self,
        req: &O::Request,
    ) -> Result<O::Reply, ApiError> {
        remote(
            self.bus
                .call::<O>(&self.host(), req, Duration::from_secs(30))
                .await,
        )
    }

    /// `vm.create` through placement (`<p>.vm.create`).
    pub async fn create_req(&self, req: &CreateVmRequest) -> Result<VmOpReply, ApiError> {
        remote(
            self.bus
                .call::<vm::Place>(&Lab, req, Duration::from_secs(30))
                .await,
        )
    }

    pub async fn create(&self, name: &str) -> VmInfo {
        self.create_req(&create_request(name)).await.unwrap().vm
    }

    /// An operation on VM `id` (`vm::Stop`, `vm::Delete`, `vm::Get`, ...).
    pub async fn op<O>(&self, id: &VmId) -> Result<O::Reply, ApiError>
    where
        O: Operation<At = HostId, Request = VmRefRequest>,
    {
        self.call::<O>(&VmRefRequest { id: id.clone() }).await
    }

    pub async fn list(&self) -> Vec<VmInfo> {
        self.bus
            .call::<vm::List>(
                &Lab,
                &banger_proto::vm::ListVmsRequest::default(),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
            .vms
    }

    /// Waits until VM `name` has published `kind`.
    pub async fn wait_event(&self, name: &str, kind: EventKind) {
        let events = self.events.clone();
        let name = name.to_owned();
        banger_testkit::wait_until(
            &format!("a {kind} event of {name}"),
            Duration::from_secs(15),
            || {
                let found = events.kinds(&name).contains(&kind);
                async move { found }
            },
        )
        .await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.listener.abort();
    }
}

fn build(dir: &tempfile::TempDir, bus: &Bus, config: &ControllerConfig, f: &Fakes) -> Controller {
    let dirs = Dirs {
        state: dir.path().join("state"),
        runtime: dir.path().join("run"),
    };
    let host = HostId::new(HOST).unwrap();
    let db = Store::open(&dirs.db(), host.clone()).unwrap();
    Controller::new(ControllerParts {
        host,
        config: config.clone(),
        dirs,
        db,
        vmm: f
            .real_vmm
            .clone()
            .unwrap_or_else(|| Arc::new(f.vmm.clone()) as Arc<dyn Vmm>),
        stord: Arc::new(f.stord.clone()),
        netd: Arc::new(f.netd.clone()),
        agent: Arc::new(f.agent.clone()),
        lab: f
            .real_lab
            .clone()
            .unwrap_or_else(|| Arc::new(f.lab.clone()) as Arc<dyn LabApi>),
        events: bus_sink(bus),
    })
}

pub fn create_request(name: &str) -> CreateVmRequest {
    serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
}

/// The service's answer: its reply or its error; a transport failure fails the test.
pub fn remote<T>(r: Result<T, banger_bus::RequestError>) -> Result<T, ApiError> {
    r.map_err(|e| match e {
        banger_bus::RequestError::Remote(api) => api,
        other => panic!("transport failure: {other}"),
    })
}
