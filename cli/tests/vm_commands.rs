//! `banger vm ...` as a user runs it: the real `banger` binary against a real nats-server, with
//! scripted vm-controllers on two hosts answering `vm.list` and the per-host operations. The
//! controllers are test doubles (the real one lives in vm-controller/); everything between the
//! CLI and them — NATS, the service API discovery, the subjects, the JSON — is real.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::agent::{ExecResult, Health};
use banger_proto::op::{self, vm};
use banger_proto::subject::VmOp;
use banger_proto::vm::{
    CreateVmRequest, ListVmsReply, LogSource, LogsReply, LogsRequest, SetVmRequest, VmExecRequest,
    VmInfo, VmNetwork, VmOpReply, VmRefRequest, VmState, VmStats,
};
use banger_proto::{
    ApiError, CpuCount, HostId, ImageName, MemMib, Subjects, VmId, VmName, service,
};
use banger_testkit::NatsServer;
use tokio::sync::watch;

/// Every request the fake controllers received, as `"<op> <vm name> [details]"`.
type Calls = Arc<watch::Sender<Vec<String>>>;

fn vm(name: &str, id: &str, host: &str, state: VmState) -> VmInfo {
    VmInfo {
        id: VmId::new(id).unwrap(),
        name: VmName::new(name).unwrap(),
        host: HostId::new(host).unwrap(),
        state,
        image: ImageName::new("debian").unwrap(),
        cpus: CpuCount::new(2).unwrap(),
        memory_mib: MemMib::new(1024).unwrap(),
        disk_mib: MemMib::new(4096).unwrap(),
        network: (state == VmState::Running).then(|| VmNetwork {
            ip: "172.16.0.2".into(),
            mac: "06:00:ac:10:00:02".into(),
            tap: "bgr0123456789ab".into(),
        }),
        port_forwards: vec![],
        reason: None,
        created_at_ms: banger_bus::now_ms(),
        updated_at_ms: banger_bus::now_ms(),
        started_at_ms: None,
        touched_at_ms: None,
    }
}

fn health() -> Health {
    Health {
        status: "ok".into(),
        uptime_secs: 65.0,
        hostname: "guest".into(),
        agent_version: "9.9.9".into(),
        boot_id: "boot".into(),
        load: [0.0; 3],
        mem_total_bytes: 1 << 30,
        mem_available_bytes: 1 << 29,
        rootfs_total_bytes: 1 << 31,
        rootfs_free_bytes: 1 << 30,
    }
}

/// One host's scripted vm-controller.
#[derive(Clone)]
struct Fake {
    host: HostId,
    vms: Arc<Mutex<Vec<VmInfo>>>,
    calls: Calls,
    /// What its `vm.list` answers say of the others, as a controller with a heartbeat view
    /// does: (live controllers, lab members). `None`: the answer of a controller older than
    /// heartbeats (no `peers`).
    view: Option<(Vec<String>, Vec<String>)>,
    /// How long its `vm.list` takes to answer (a slow or distant host).
    list_delay: Duration,
}

impl Fake {
    fn record(&self, what: String) {
        self.calls.send_modify(|c| c.push(what));
    }

    fn find(&self, id: &VmId) -> Result<VmInfo, ApiError> {
        self.vms
            .lock()
            .unwrap()
            .iter()
            .find(|v| &v.id == id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no VM {id} on {}", self.host)))
    }

    async fn lifecycle(self, op: VmOp, req: VmRefRequest) -> Result<VmOpReply, ApiError> {
        let mut vm = self.find(&req.id)?;
        self.record(format!("{op} {}", vm.name));
        if op == VmOp::Stop && vm.name.as_str() == "a" {
            // Answer `a` only once `b`'s stop has arrived: this passes only when the CLI sends
            // both at once, and it makes `b`'s answer arrive first, so the printed order is the
            // CLI's doing.
            let mut rx = self.calls.subscribe();
            let both = tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|c| c.iter().any(|x| x == "stop b")),
            )
            .await;
            if !matches!(both, Ok(Ok(_))) {
                return Err(ApiError::internal(
                    "stop b never arrived while a was being stopped: no fan-out",
                ));
            }
        }
        if vm.name.as_str() == "stuck" {
            return Err(ApiError::conflict("stuck is busy"));
        }
        vm.state = match op {
            VmOp::Stop | VmOp::Kill => VmState::Stopped,
            VmOp::Start | VmOp::Restart => VmState::Running,
            _ => vm.state,
        };
        let note = (op == VmOp::Stop && vm.name.as_str() == "b")
            .then(|| "the guest ignored CtrlAltDel; it was stopped by force".to_owned());
        Ok(VmOpReply::new(vm, note))
    }

    async fn set(self, req: SetVmRequest) -> Result<VmOpReply, ApiError> {
        let vm = self.find(&req.id)?;
        self.record(format!(
            "set {} cpus={:?} mem={:?} disk={:?}",
            vm.name,
            req.cpus.map(CpuCount::get),
            req.memory_mib.map(MemMib::get),
            req.disk_mib.map(MemMib::get)
        ));
        Ok(VmOpReply::new(vm, None))
    }

    async fn get(self, req: VmRefRequest) -> Result<VmInfo, ApiError> {
        let vm = self.find(&req.id)?;
        self.record(format!("get {}", vm.name));
        Ok(vm)
    }

    async fn exec(self, req: VmExecRequest) -> Result<ExecResult, ApiError> {
        let vm = self.find(&req.id)?;
        self.record(format!("exec {} {}", vm.name, req.exec.argv.join(" ")));
        Ok(ExecResult {
            exit_code: Some(3),
            signal: None,
            timed_out: false,
            stdout: "hello\n".into(),
            stderr: "oops\n".into(),
        })
    }

    async fn health(self, req: VmRefRequest) -> Result<Health, ApiError> {
        self.record(format!("health {}", req.id.short()));
        if let Ok(vm) = self.find(&req.id)
            && vm.state != VmState::Running
        {
            return Err(ApiError::conflict(format!("{} is {}", vm.name, vm.state)));
        }
        Ok(health())
    }

    async fn stats(self, req: VmRefRequest) -> Result<VmStats, ApiError> {
        let vm = self.find(&req.id)?;
        self.record(format!("stats {}", vm.name));
        Ok(VmStats {
            id: vm.id,
            vmm_rss_bytes: Some(34 * 1024 * 1024),
            vmm_cpu_ms: Some(1250),
            guest: Some(health()),
            vmm_metrics: None,
        })
    }

    /// A serial log of two boot lines that grows by one line each time it is read from an
    /// offset (as `-f` does).
    async fn logs(self, req: LogsRequest) -> Result<LogsReply, ApiError> {
        let vm = self.find(&req.id)?;
        self.record(format!(
            "logs {} {:?} offset={:?}",
            vm.name, req.source, req.offset
        ));
        let head = if req.source == LogSource::Vmm {
            "firecracker started\n"
        } else {
            "boot line 1\nboot line 2\n"
        };
        let Some(offset) = req.offset else {
            return Ok(LogsReply {
                data: head.into(),
                next_offset: head.len() as u64,
            });
        };
        let polls = self
            .calls
            .borrow()
            .iter()
            .filter(|c| c.contains("offset=Some"))
            .count();
        let data = format!("tick {polls}\n");
        Ok(LogsReply {
            next_offset: offset + data.len() as u64,
            data,
        })
    }

    async fn create(self, req: CreateVmRequest) -> Result<VmOpReply, ApiError> {
        self.record(format!(
            "create {} cpus={:?} mem={:?} start={}",
            req.name,
            req.cpus.map(CpuCount::get),
            req.memory_mib.map(MemMib::get),
            req.start
        ));
        if req.image.as_ref().is_some_and(|i| i.as_str() == "nosuch") {
            // As the real controller answers an image this host does not have.
            return Err(ApiError::not_found(format!(
                "image nosuch is not registered on host {}",
                self.host
            )));
        }
        let mut vm = vm(
            req.name.as_str(),
            "ffff0000000000000000000000000000",
            self.host.as_str(),
            if req.start {
                VmState::Running
            } else {
                VmState::Stopped
            },
        );
        if let Some(c) = req.cpus {
            vm.cpus = c;
        }
        let mut stored = vm.clone();
        if vm.name.as_str() == "broken" {
            // Created, then its boot fails: the record says why.
            stored.state = VmState::Failed;
            stored.reason = Some("simulated boot failure".into());
        }
        self.vms.lock().unwrap().push(stored);
        let mut reply = VmOpReply::new(vm, None);
        // As the real controller, which says which hypervisor it runs.
        reply.vmm = Some(if self.host.as_str().starts_with("sim") {
            "sim".to_owned()
        } else {
            "firecracker".to_owned()
        });
        Ok(reply)
    }
}

/// A nats-server, fake controllers, and the CLI pointed at them.
struct Lab {
    nats: NatsServer,
    calls: Calls,
    shutdown: CancellationToken,
    state: tempfile::TempDir,
}

impl Lab {
    /// Starts a nats-server; `None` (after announcing the skip) when it is not installed.
    fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`Self::start`] with extra nats-server arguments.
    fn start_with(nats_args: &[&str]) -> Option<Self> {
        if !banger_testkit::have_program("nats-server") {
            banger_testkit::skip("nats-server is not installed");
            return None;
        }
        Some(Self {
            nats: NatsServer::start_with_args(nats_args),
            calls: Arc::new(watch::channel(Vec::new()).0),
            shutdown: CancellationToken::new(),
            state: tempfile::tempdir().unwrap(),
        })
    }

    /// Registers a fake vm-controller for `host` holding `vms`. `answers_list: false` plays a
    /// controller that is found by discovery but never answers `vm.list`. Its answers carry
    /// no `peers`, as a controller older than heartbeats answers.
    async fn controller(&self, host: &str, vms: Vec<VmInfo>, answers_list: bool) {
        self.controller_with(host, vms, answers_list, None, Duration::ZERO)
            .await;
    }

    /// [`Self::controller`] whose `vm.list` answers name `peers` (live controllers) and
    /// `members` (the lab's), as a controller with heartbeats does.
    async fn knowing(&self, host: &str, vms: Vec<VmInfo>, peers: &[&str], members: &[&str]) {
        self.knowing_after(host, vms, peers, members, Duration::ZERO)
            .await;
    }

    /// [`Self::knowing`] whose `vm.list` answers come only after `delay`.
    async fn knowing_after(
        &self,
        host: &str,
        vms: Vec<VmInfo>,
        peers: &[&str],
        members: &[&str],
        delay: Duration,
    ) {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        self.controller_with(host, vms, true, Some((own(peers), own(members))), delay)
            .await;
    }

    async fn controller_with(
        &self,
        host: &str,
        vms: Vec<VmInfo>,
        answers_list: bool,
        view: Option<(Vec<String>, Vec<String>)>,
        list_delay: Duration,
    ) {
        let bus = Bus::new(
            async_nats::connect(self.nats.url()).await.unwrap(),
            Subjects::default(),
        );
        let h = HostId::new(host).unwrap();
        let fake = Fake {
            host: h.clone(),
            vms: Arc::new(Mutex::new(vms)),
            calls: self.calls.clone(),
            view,
            list_delay,
        };
        // A host named sim* says, as the real controller does, that it runs the simulator.
        let vmm = if host.starts_with("sim") {
            "sim"
        } else {
            "firecracker"
        };
        let spec = ServiceSpec::new(service::VM_CONTROLLER, "scripted test controller", &h)
            .with_meta(service::META_VMM, vmm);
        let mut svc = ServiceHost::start(&bus, spec).await.unwrap();
        if answers_list {
            svc.serve(vm::List, &op::Lab, fake.clone(), |f, r| async move {
                f.record("list".into());
                if !r.refs.is_empty() {
                    f.record(format!("list refs={}", r.refs.join(",")));
                }
                // A slow host, not a synchronisation.
                tokio::time::sleep(f.list_delay).await;
                // As the real controller: only the VMs the refs could name.
                let vms = f.vms.lock().unwrap().clone();
                let mut reply = ListVmsReply::new(
                    f.host.clone(),
                    vms.into_iter().filter(|v| r.wants(v)).collect(),
                );
                if let Some((peers, members)) = &f.view {
                    reply.peers = Some(peers.clone());
                    reply.members = Some(members.clone());
                }
                Ok(reply)
            })
            .await
            .unwrap();
        }
        let f = fake;
        let lifecycle = |op: VmOp| move |f: Fake, r| f.lifecycle(op, r);
        svc.serve(vm::Start, &h, f.clone(), lifecycle(VmOp::Start))
            .await
            .unwrap();
        svc.serve(vm::Stop, &h, f.clone(), lifecycle(VmOp::Stop))
            .await
            .unwrap();
        svc.serve(vm::Restart, &h, f.clone(), lifecycle(VmOp::Restart))
            .await
            .unwrap();
        svc.serve(vm::Kill, &h, f.clone(), lifecycle(VmOp::Kill))
            .await
            .unwrap();
        svc.serve(vm::Delete, &h, f.clone(), lifecycle(VmOp::Delete))
            .await
            .unwrap();
        svc.serve(vm::Set, &h, f.clone(), Fake::set).await.unwrap();
        svc.serve(vm::Get, &h, f.clone(), Fake::get).await.unwrap();
        svc.serve(vm::Exec, &h, f.clone(), Fake::exec)
            .await
            .unwrap();
        svc.serve(vm::Health, &h, f.clone(), Fake::health)
            .await
            .unwrap();
        svc.serve(vm::Stats, &h, f.clone(), Fake::stats)
            .await
            .unwrap();
        svc.serve(vm::Logs, &h, f.clone(), Fake::logs)
            .await
            .unwrap();
        svc.serve(vm::Create, &h, f.clone(), Fake::create)
            .await
            .unwrap();
        svc.serve(vm::Place, &op::Lab, f, Fake::create)
            .await
            .unwrap();
        bus.client().flush().await.unwrap();
        tokio::spawn(svc.run(self.shutdown.clone()));
    }

    /// Runs `banger ARGS` to completion.
    async fn banger(&self, args: &[&str]) -> Output {
        self.banger_with(args, |_| {}).await
    }

    async fn banger_with(
        &self,
        args: &[&str],
        tweak: impl FnOnce(&mut tokio::process::Command),
    ) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_banger"));
        cmd.args(["--nats-url", &self.nats.url(), "--timeout", "3"])
            .args(args)
            .env("BANGER_STATE_DIR", self.state.path())
            .env("NO_COLOR", "1")
            .env_remove("BANGER_CONFIG")
            .env_remove("BANGER_PREFIX")
            .kill_on_drop(true);
        tweak(&mut cmd);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("banger did not finish within 60s")
            .unwrap()
    }

    /// The recorded calls except the `vm.list` answers.
    fn ops(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .calls
            .borrow()
            .iter()
            .filter(|c| *c != "list" && !c.starts_with("list refs="))
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn lists(&self) -> usize {
        self.calls.borrow().iter().filter(|c| *c == "list").count()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const A: &str = "a0000000000000000000000000000001";
const B: &str = "b0000000000000000000000000000002";

async fn two_hosts(lab: &Lab) {
    lab.controller("h1", vec![vm("a", A, "h1", VmState::Running)], true)
        .await;
    lab.controller("h2", vec![vm("b", B, "h2", VmState::Running)], true)
        .await;
}

/// [`two_hosts`] whose answers name both as live peers (controllers with heartbeats).
async fn two_live_hosts(lab: &Lab) {
    let peers = ["h1", "h2"];
    lab.knowing("h1", vec![vm("a", A, "h1", VmState::Running)], &peers, &[])
        .await;
    lab.knowing("h2", vec![vm("b", B, "h2", VmState::Running)], &peers, &[])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_a_a_b_missing_stops_each_vm_once_in_typed_order_and_reports_missing() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_live_hosts(&lab).await;
    let out = lab.banger(&["vm", "stop", "a", "a", "b", "missing"]).await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure: {stdout}{stderr}"
    );
    // One stop per VM, each on its own host's subject, sent at once (the fake answers a only
    // after b's request arrived).
    assert_eq!(lab.ops(), ["stop a", "stop b"]);
    // One vm.list snapshot from each host, not one per ref; "missing" named nothing, so it
    // was looked for once more after discovery (each host again) before it was called missing.
    assert_eq!(lab.lists(), 4);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["a", "stopped"]
    );
    assert!(lines[1].starts_with("b "), "{stdout}");
    assert!(
        lines[1].contains("stopped; the guest ignored CtrlAltDel"),
        "the controller's note is shown: {stdout}"
    );
    assert!(lines[2].starts_with("missing "), "{stdout}");
    assert!(
        lines[2].contains(r#"failed: no VM is named "missing""#),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 3 targets failed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_prefix_lists_the_candidates_and_the_other_refs_still_run() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.controller(
        "h1",
        vec![vm(
            "x1",
            "abcd1000000000000000000000000000",
            "h1",
            VmState::Running,
        )],
        true,
    )
    .await;
    lab.controller(
        "h2",
        vec![
            vm(
                "x2",
                "abcd2000000000000000000000000000",
                "h2",
                VmState::Running,
            ),
            vm("b", B, "h2", VmState::Running),
        ],
        true,
    )
    .await;
    let out = lab.banger(&["vm", "kill", "abcd", "b"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert_eq!(lab.ops(), ["kill b"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        r#"abcd  failed: "abcd" matches 2 VMs: x1 (abcd10000000) on h1, x2 (abcd20000000) on h2; use the name or more of the id (ambiguous)"#
    );
    assert_eq!(lines[1], "b     killed");

    // Alone, the ambiguous ref sends nothing and fails (1: not a not-found).
    let out = lab.banger(&["vm", "kill", "abcd"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(lab.ops(), ["kill b"]);
    // A unique prefix works.
    let out = lab.banger(&["vm", "kill", "abcd2"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lab.ops(), ["kill b", "kill x2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_that_all_miss_exit_4_and_a_refused_operation_exits_1() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.controller("h1", vec![vm("stuck", A, "h1", VmState::Running)], true)
        .await;
    let out = lab.banger(&["vm", "start", "nope", "nada"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    let out = lab.banger(&["vm", "stop", "stuck"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("failed: stuck is busy (conflict)"));
    assert_eq!(lab.ops(), ["stop stuck"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_or_negative_cpus_or_memory_are_refused_before_anything_is_sent() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    for (args, says) in [
        (
            &["vm", "create", "web", "--cpus", "0"][..],
            "cpus must be a whole number greater than 0",
        ),
        (
            &["vm", "create", "web", "--cpus", "-1"],
            "cpus must be a whole number greater than 0",
        ),
        (
            &["vm", "create", "web", "--memory", "0"],
            "memory must be greater than 0",
        ),
        (
            &["vm", "create", "web", "--memory", "-1"],
            "memory must be greater than 0",
        ),
        (
            &["vm", "create", "web", "--memory=-512M"],
            "memory must be greater than 0",
        ),
        (
            &["vm", "set", "a", "--cpus", "0"],
            "cpus must be a whole number greater than 0",
        ),
        (
            &["vm", "set", "a", "b", "--memory", "-1"],
            "memory must be greater than 0",
        ),
        (&["vm", "set", "a"], "required arguments were not provided"),
    ] {
        let out = lab.banger(args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Nothing reached a controller, not even a listing.
    assert_eq!(lab.ops(), Vec::<String>::new());
    assert_eq!(lab.lists(), 0);

    // The same path with valid values does reach one, so the silence above is meaningful.
    let out = lab
        .banger(&[
            "vm",
            "create",
            "web",
            "--cpus",
            "2",
            "--memory",
            "1G",
            "--no-start",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        lab.ops(),
        ["create web cpus=Some(2) mem=Some(1024) start=false"]
    );
    assert!(
        text(&out.stdout).contains("start it with `banger vm start web`"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_sends_the_new_settings_to_every_vm_once() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab
        .banger(&["vm", "set", "b", "a", "b", "--cpus", "4", "--memory", "2G"])
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        lab.ops(),
        [
            "set a cpus=Some(4) mem=Some(2048) disk=None",
            "set b cpus=Some(4) mem=Some(2048) disk=None"
        ]
    );
    assert_eq!(
        stdout,
        "b  set cpus 4, memory 2G\n\
         a  set cpus 4, memory 2G\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_names_the_hosts_that_did_not_answer() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    // h3's controller is discoverable but never answers vm.list.
    lab.controller("h3", vec![vm("c", A, "h3", VmState::Running)], false)
        .await;
    let out = lab.banger(&["vm", "list"]).await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "HOST", "STATE", "IP", "CPUS", "MEM", "AGE"]
    );
    assert_eq!(
        lines[1][..6],
        ["a", "h1", "running", "172.16.0.2", "2", "1G"]
    );
    assert_eq!(
        lines[2][..6],
        ["b", "h2", "running", "172.16.0.2", "2", "1G"]
    );
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(stderr.contains("host h3 did not answer"), "{stderr}");

    let out = lab.banger(&["vm", "list", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unreachable_hosts"], serde_json::json!(["h3"]));
    assert_eq!(json["vms"].as_array().map(Vec::len), Some(2));

    // A ref that is nowhere says the VM may be on the silent host.
    let out = lab.banger(&["vm", "show", "c"]).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("host h3 did not answer; the VM may be there"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exits_with_the_guest_commands_status_and_passes_its_output() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab
        .banger(&["vm", "exec", "b", "--", "sh", "-c", "echo hello; exit 3"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
    assert!(text(&out.stderr).contains("oops"));
    assert_eq!(lab.ops(), ["exec b sh -c echo hello; exit 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_uses_the_bundle_key_and_reminds_that_the_vm_still_runs() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.controller(
        "h1",
        vec![
            vm("web", A, "h1", VmState::Running),
            vm("idle", B, "h1", VmState::Stopped),
        ],
        true,
    )
    .await;
    // A stand-in `ssh` first on PATH that records its arguments and exits 7.
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("ssh.args");
    write_script(
        &bin.path().join("ssh"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexit 7\n",
            log.display()
        ),
    );
    let key = lab.state.path().join("ssh/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "not a real key").unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = lab
        .banger_with(&["vm", "ssh", "web", "--", "uptime"], |c| {
            c.env("PATH", &path);
        })
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "ssh's status is ours: {stderr}");
    let args = std::fs::read_to_string(&log).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let key_at = args.iter().position(|a| *a == "-i").unwrap();
    assert_eq!(args[key_at + 1], key.display().to_string());
    assert_eq!(args[args.len() - 2..], ["root@172.16.0.2", "uptime"]);
    assert!(
        stderr.contains("web is still running; stop it with `banger vm stop web`"),
        "{stderr}"
    );
    // The reminder asks the VM's health (an answer means it still runs), as the seed asks.
    assert_eq!(lab.ops(), ["health a00000000000"]);

    // A stopped VM: a clear error, and ssh never runs.
    std::fs::remove_file(&log).unwrap();
    let out = lab
        .banger_with(&["vm", "ssh", "idle"], |c| {
            c.env("PATH", &path);
        })
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("idle is stopped, not running: start it with `banger vm start idle`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!log.exists());
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_health_and_stats_ask_the_vms_own_controller() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab
        .banger(&["vm", "create", "web", "--wait", "--wait-timeout", "20"])
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("created web on h"), "{stdout}");
    assert!(stdout.contains("web is healthy: agent 9.9.9"), "{stdout}");
    assert_eq!(
        lab.ops(),
        [
            "create web cpus=None mem=None start=true",
            "health ffff00000000"
        ]
    );

    let out = lab.banger(&["vm", "health", "b"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("b: healthy (agent 9.9.9"));
    let out = lab.banger(&["vm", "stats", "a", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let stats: VmStats = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats.vmm_rss_bytes, Some(34 * 1024 * 1024));
    assert!(lab.ops().contains(&"stats a".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_print_the_tail_and_follow_until_interrupted() {
    use tokio::io::AsyncBufReadExt as _;

    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab.banger(&["vm", "logs", "a"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "boot line 1\nboot line 2\n");
    let out = lab.banger(&["vm", "logs", "a", "--vmm"]).await;
    assert_eq!(text(&out.stdout), "firecracker started\n");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["--nats-url", &lab.nats.url(), "vm", "logs", "-f", "b"])
        .env("BANGER_STATE_DIR", lab.state.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            seen.push(l);
            if seen.len() == 4 {
                break;
            }
        }
    })
    .await
    .expect("four lines of followed output");
    assert_eq!(seen, ["boot line 1", "boot line 2", "tick 1", "tick 2"]);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("banger vm logs -f exits on Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_gives_up_at_once_when_the_vm_failed() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.controller("h1", vec![], true).await;
    let out = lab
        .banger(&["vm", "create", "broken", "--wait", "--wait-timeout", "60"])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken is failed and will not become healthy: simulated boot failure"),
        "{stderr}"
    );
    // One health attempt, one look at the record, no more polling.
    assert_eq!(
        lab.ops(),
        [
            "create broken cpus=None mem=None start=true",
            "get broken",
            "health ffff00000000"
        ]
    );
}

/// Progress spinners are for people: off a terminal `--wait` prints its plain line and not one
/// escape sequence, even with NO_COLOR unset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_off_a_terminal_prints_plain_lines_without_escape_codes() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.controller("h1", vec![], true).await;
    let out = lab
        .banger_with(
            &["vm", "create", "web", "--wait", "--wait-timeout", "20"],
            |c| {
                c.env_remove("NO_COLOR");
            },
        )
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stderr, "waiting up to 20s for web's guest agent...\n");
    assert!(stdout.contains("web is healthy"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
}

/// On a terminal (a pseudo-terminal from util-linux `script`) `--wait` draws a spinner instead
/// of the plain line, and takes it off the screen when the agent answers; `NO_COLOR` turns it
/// off again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_on_a_terminal_shows_a_spinner_unless_no_color() {
    if !banger_testkit::have_program("script") {
        banger_testkit::skip("util-linux `script` is not installed");
        return;
    }
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.controller("h1", vec![], true).await;
    let under_pty = |name: &str, no_color: bool| {
        let line = format!(
            "'{}' --nats-url '{}' --timeout 3 vm create {name} --wait --wait-timeout 20",
            env!("CARGO_BIN_EXE_banger"),
            lab.nats.url()
        );
        let mut cmd = tokio::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env("BANGER_STATE_DIR", lab.state.path())
            .env("TERM", "xterm-256color")
            .env_remove("BANGER_CONFIG")
            .env_remove("BANGER_PREFIX")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        async move {
            tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("banger under script did not finish within 60s")
                .unwrap()
        }
    };

    let out = under_pty("web", false).await;
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen:?}");
    assert!(
        screen.contains("waiting up to 20s for web's guest agent"),
        "{screen:?}"
    );
    assert!(
        !screen.contains("guest agent..."),
        "plain line on a terminal: {screen:?}"
    );
    // console's clear-line: the spinner was drawn and erased.
    assert!(screen.contains("\x1b[2K"), "{screen:?}");
    assert!(screen.contains("web is healthy"), "{screen:?}");

    let out = under_pty("api", true).await;
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen:?}");
    assert!(
        screen.contains("waiting up to 20s for api's guest agent...\r\n"),
        "{screen:?}"
    );
    assert!(!screen.contains('\x1b'), "{screen:?}");
}

/// A lab member (a host with a subnet claim in netd's bucket) that answers nothing at all —
/// not even discovery, as when it is cut off — is named unreachable, and the list exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_member_that_answers_nothing_is_named_unreachable() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab.banger(&["vm", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["membership"], "known");

    // Claims as netd writes them (a KV bucket's stream), h3's included.
    let js = async_nats::jetstream::new(async_nats::connect(lab.nats.url()).await.unwrap());
    let bucket = banger_proto::net::subnet_bucket("banger");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        ..Default::default()
    })
    .await
    .unwrap();
    for (key, host) in [
        ("10_77_0_0", "h1"),
        ("10_77_1_0", "h2"),
        ("10_77_2_0", "h3"),
    ] {
        js.publish(format!("$KV.{bucket}.{key}"), host.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let out = lab.banger(&["vm", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unreachable_hosts"], serde_json::json!(["h3"]));
    assert_eq!(json["vms"].as_array().map(Vec::len), Some(2));
    assert!(
        text(&out.stderr).contains("host h3 did not answer"),
        "{}",
        text(&out.stderr)
    );
}

/// `banger vm list | head -0`: the reader closed stdout; the command ends quietly (no panic,
/// no message) with the status of a process ended by SIGPIPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_command_quietly() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // Not `output()`: it would replace stdout by a pipe of its own.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_banger"))
        .args([
            "--nats-url",
            &lab.nats.url(),
            "--timeout",
            "3",
            "vm",
            "list",
        ])
        .env("BANGER_STATE_DIR", lab.state.path())
        .env("NO_COLOR", "1")
        .env_remove("BANGER_CONFIG")
        .env_remove("BANGER_PREFIX")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("banger did not finish within 60s")
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// A missing image exits 4 (not found), as `vm create --help` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_missing_image_exits_4_as_its_help_says() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab
        .banger(&["vm", "create", "web", "--image", "nosuch"])
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not registered on host h"),
        "{}",
        text(&out.stderr)
    );
    let help = lab.banger(&["vm", "create", "--help"]).await;
    let help = text(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("4 not found or unavailable (the image is not registered"),
        "{help}"
    );
}

/// The CLI says VMs are simulated when a controller that answered says it runs the simulator
/// (a lab has no local stack config to tell), and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_list_shows_the_simulator_banner_when_a_controller_is_simulated() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab.banger(&["vm", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("SIMULATED"),
        "{}",
        text(&out.stderr)
    );
    lab.controller("sim3", vec![], true).await;
    let out = lab.banger(&["vm", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).matches("SIMULATED HYPERVISOR").count(),
        1,
        "{}",
        text(&out.stderr)
    );
    // A create that names its host runs no discovery: the controller's answer says it.
    for (host, banners) in [("h1", 0), ("sim3", 1)] {
        let out = lab
            .banger(&["vm", "create", &format!("on-{host}"), "--host", host])
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr).matches("SIMULATED HYPERVISOR").count(),
            banners,
            "create on {host}: {}",
            text(&out.stderr)
        );
    }
}

/// When the lab's membership cannot be read (here: its JetStream read goes unanswered), a host
/// that answers nothing could not be named, so `vm list` says "membership unknown" and exits
/// 3; with no JetStream at all (a single host), the list is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_lab_membership_is_said_and_exits_3() {
    // No JetStream: nobody answers $JS.API, which is "not a lab".
    let Some(lab) = Lab::start_with(&["-js=false"]) else {
        return;
    };
    two_hosts(&lab).await;
    let out = lab.banger(&["vm", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["membership"], "known");

    // Something takes the membership read and never answers it, as a node without quorum.
    let client = async_nats::connect(lab.nats.url()).await.unwrap();
    let bucket = banger_proto::net::subnet_bucket("banger");
    let _silent = client
        .subscribe(format!("$JS.API.STREAM.INFO.KV_{bucket}"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let out = lab.banger(&["vm", "list", "--json"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["membership"], "unknown");
    assert_eq!(json["vms"].as_array().map(Vec::len), Some(2));
    assert!(stderr.contains("lab membership unknown"), "{stderr}");

    let out = lab.banger(&["status"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("lab membership unknown"), "{stdout}");
}

/// Controllers whose answers name the live controllers (their heartbeats): `vm list` shows
/// every host's VMs from one gather, complete, without asking discovery; a live controller
/// named by an answer that does not answer itself, and a lab member that does not, are named
/// unreachable (exit 3). Nothing registers h3 or h4 anywhere: only the answers name them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_named_in_the_answers_are_the_hosts_waited_for_and_named() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.knowing(
        "h1",
        vec![vm("a", A, "h1", VmState::Running)],
        &["h1", "h2"],
        &[],
    )
    .await;
    lab.knowing(
        "h2",
        vec![vm("b", B, "h2", VmState::Running)],
        &["h1", "h2"],
        &[],
    )
    .await;
    let out = lab.banger(&["vm", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(json["unreachable_hosts"], serde_json::json!([]));
    assert_eq!(json["membership"], "known");

    // Now the answers name a third live controller, h3, that never answers (cut off, killed
    // after its last beat), and a lab member h4 without a controller.
    let Some(lab) = Lab::start() else {
        return;
    };
    let (peers, members) = (["h1", "h2", "h3"], ["h1", "h2", "h3", "h4"]);
    lab.knowing(
        "h1",
        vec![vm("a", A, "h1", VmState::Running)],
        &peers,
        &members,
    )
    .await;
    lab.knowing(
        "h2",
        vec![vm("b", B, "h2", VmState::Running)],
        &peers,
        &members,
    )
    .await;
    let out = lab.banger(&["vm", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unreachable_hosts"], serde_json::json!(["h3", "h4"]));
    assert_eq!(json["vms"].as_array().map(Vec::len), Some(2));
    assert!(
        text(&out.stderr).contains("host h3 did not answer"),
        "{}",
        text(&out.stderr)
    );
}

/// Commands on existing VMs send their refs with `vm.list`, so each controller answers with
/// only the VMs they could name; resolution and its messages are those of a full list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_vms_list_only_what_their_refs_could_name() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let mut h1 = vec![vm("a", A, "h1", VmState::Running)];
    // Many bystanders that no ref names.
    for i in 0..50u32 {
        h1.push(vm(
            &format!("other{i}"),
            &format!("c{i:031x}"),
            "h1",
            VmState::Stopped,
        ));
    }
    lab.knowing("h1", h1, &["h1", "h2"], &[]).await;
    lab.knowing(
        "h2",
        vec![vm("b", B, "h2", VmState::Running)],
        &["h1", "h2"],
        &[],
    )
    .await;
    let out = lab.banger(&["vm", "stop", "a", "b0", "missing"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(lab.ops(), ["stop a", "stop b"]);
    let asked: Vec<String> = lab
        .calls
        .borrow()
        .iter()
        .filter(|c| c.starts_with("list refs="))
        .cloned()
        .collect();
    // The quick gather (both hosts), then, as "missing" named nothing, the gather after
    // discovery (both hosts again) before it is called missing.
    assert_eq!(asked, ["list refs=a,b0,missing"; 4]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("no VM is named \"missing\""), "{said}");
    // One ref: `vm show` asks with it too, and an id prefix shared by two VMs is ambiguous.
    let out = lab.banger(&["vm", "show", "c"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("\"c\" matches 50 VMs"),
        "{}",
        text(&out.stderr)
    );
}

/// A VM on a host that no answer names yet (its heartbeat not renewed since the network came
/// back, as in the lab test) is still found: a ref the quick gather cannot resolve is looked
/// up again through discovery before it is called missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_on_a_host_no_answer_knows_of_yet_is_found_through_discovery() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.knowing(
        "h1",
        vec![vm("web", A, "h1", VmState::Running)],
        &["h1"],
        &[],
    )
    .await;
    lab.knowing_after(
        "h2",
        vec![vm("b", B, "h2", VmState::Stopped)],
        &["h1", "h2"],
        &[],
        Duration::from_millis(300),
    )
    .await;
    let out = lab.banger(&["vm", "start", "b"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(lab.ops(), ["start b"]);
    // A ref found by the quick gather costs no discovery.
    let before = lab.lists();
    let out = lab.banger(&["vm", "stop", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lab.ops(), ["start b", "stop web"]);
    assert_eq!(
        lab.lists() - before,
        2,
        "one gather, answered by both hosts"
    );
}

/// Answers without `peers` (controllers older than heartbeats, or without JetStream) still
/// list everything, through discovery as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_peers_still_list_through_discovery() {
    let Some(lab) = Lab::start() else {
        return;
    };
    two_hosts(&lab).await;
    for _ in 0..3 {
        let out = lab.banger(&["vm", "list", "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["vms"].as_array().map(Vec::len), Some(2), "{json}");
    }
}
