//! Fixtures for netd's integration tests: a private network namespace with its own nats-server
//! and a real `banger-netd` inside, unique bridge, subnet and table names, typed requests made
//! from inside the namespace, and kernel state read with `ip -n` / `nft` in that namespace.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixtures"
)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use banger_bus::{Bus, RequestError};
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::net::{AttachRequest, DetachReply, DetachRequest, Lease, PortForward};
use banger_proto::op::{Operation, net};
use banger_proto::vm::{VmInfo, VmState};
use banger_proto::{ApiError, CpuCount, HostId, ImageName, MemMib, Subjects, VmId, VmName};
use banger_testkit::netns::{NetNs, run_ok};
use banger_testkit::{NatsServer, Process, wait_until_blocking};

/// The resolver the fixture's netd hands to guests (`[netd] guest_dns`).
pub(crate) const GUEST_DNS: &str = "10.0.0.53";

/// Host id every fixture uses.
pub(crate) const HOST: &str = "testhost";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace with nats-server and (optionally running) netd.
pub(crate) struct Fixture {
    /// The "host" namespace netd runs in.
    pub(crate) ns: NetNs,
    /// Its nats-server.
    pub(crate) nats: NatsServer,
    /// Config and state.
    pub(crate) dir: tempfile::TempDir,
    /// Bridge name.
    pub(crate) bridge: String,
    /// Subnet CIDR.
    pub(crate) subnet: String,
    /// nft table name.
    pub(crate) table: String,
    /// A unique number for this fixture.
    pub(crate) n: u32,
    netd: Option<Process>,
}

/// Options for a fixture.
pub(crate) struct Options {
    /// Prefix length of the subnet.
    pub(crate) prefix: u8,
    /// Reconcile interval.
    pub(crate) reconcile_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            prefix: 24,
            reconcile_secs: 3600,
        }
    }
}

impl Fixture {
    /// Creates the namespace, starts nats-server and netd, and waits until netd answers.
    pub(crate) fn start(tag: &str, opts: Options) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 100_000;
        let ns = NetNs::create(tag);
        let nats = nats_in(&ns);
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("bb{pid}x{n}");
        let subnet = format!("10.{}.{}.0/{}", 100 + n % 100, pid % 250, opts.prefix);
        let table = format!("bt_{pid}_{n}");
        std::fs::write(
            dir.path().join("banger.toml"),
            format!(
                "[netd]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\nnft_table = \"{table}\"\n\
                 reconcile_interval_secs = {}\nreconcile_grace_secs = 0\n\
                 guest_dns = [\"{GUEST_DNS}\"]\n",
                opts.reconcile_secs
            ),
        )
        .unwrap();
        let mut fx = Self {
            ns,
            nats,
            dir,
            bridge,
            subnet,
            table,
            n,
            netd: None,
        };
        fx.start_netd();
        fx
    }

    /// Starts netd and waits until it answers `status`.
    pub(crate) fn start_netd(&mut self) {
        let mut cmd = self.ns.command(env!("CARGO_BIN_EXE_banger-netd"));
        cmd.args(["--nats-url", &self.nats.url(), "--host-id", HOST])
            .arg("--config")
            .arg(self.dir.path().join("banger.toml"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(self.dir.path().join("run"))
            .env("RUST_LOG", "warn");
        self.netd = Some(Process::spawn("banger-netd", cmd));
        let url = self.nats.url();
        self.ns.block_on(move || async move {
            let bus = connect(&url).await;
            banger_testkit::wait_until("netd to answer status", Duration::from_secs(30), || {
                let bus = bus.clone();
                async move {
                    bus.call::<net::Status>(
                        &host(),
                        &banger_proto::net::NetStatusRequest {},
                        Duration::from_secs(5),
                    )
                    .await
                    .is_ok()
                }
            })
            .await;
        });
    }

    /// Stops netd with SIGTERM and checks it exits cleanly.
    pub(crate) fn stop_netd(&mut self) {
        if let Some(mut p) = self.netd.take() {
            let status = p.terminate(Duration::from_secs(30)).unwrap();
            assert!(status.success(), "netd exited with {status}");
        }
    }

    /// Calls netd's operation `O` from inside the namespace: its reply, or the error netd
    /// answered (a transport failure fails the test).
    pub(crate) fn request<O: Operation<At = HostId>>(
        &self,
        req: O::Request,
    ) -> Result<O::Reply, ApiError> {
        let url = self.nats.url();
        self.ns.block_on(move || async move {
            let bus = connect(&url).await;
            match bus.call::<O>(&host(), &req, Duration::from_secs(30)).await {
                Ok(r) => Ok(r),
                Err(RequestError::Remote(e)) => Err(e),
                Err(e) => panic!("{} failed on the transport: {e}", O::ENDPOINT),
            }
        })
    }

    /// Sends raw JSON to operation `O`'s subject, as a client that does not use the typed
    /// request would: for bodies the typed request cannot even hold.
    pub(crate) fn raw<O: Operation<At = HostId>>(
        &self,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let url = self.nats.url();
        self.ns.block_on(move || async move {
            let bus = connect(&url).await;
            let subject = O::subject(bus.subjects(), &host());
            match bus.request(subject, &body, Duration::from_secs(30)).await {
                Ok(r) => Ok(r),
                Err(RequestError::Remote(e)) => Err(e),
                Err(e) => panic!("{} failed on the transport: {e}", O::ENDPOINT),
            }
        })
    }

    /// Attaches a VM and expects success.
    pub(crate) fn attach(&self, vm: &VmId, name: &str, forwards: Vec<PortForward>) -> Lease {
        self.try_attach(vm, name, forwards)
            .unwrap_or_else(|e| panic!("attach {name}: {e}"))
    }

    /// Attaches a VM.
    pub(crate) fn try_attach(
        &self,
        vm: &VmId,
        name: &str,
        forwards: Vec<PortForward>,
    ) -> Result<Lease, ApiError> {
        self.request::<net::Attach>(AttachRequest {
            vm_id: vm.clone(),
            vm_name: VmName::new(name).unwrap(),
            port_forwards: forwards,
        })
    }

    /// Every lease.
    pub(crate) fn leases(&self) -> Vec<Lease> {
        self.request::<net::List>(banger_proto::net::NetListRequest {})
            .unwrap()
            .leases
    }

    /// Publishes a lifecycle event of this host.
    pub(crate) fn publish(&self, vm: &VmId, kind: EventKind) {
        self.publish_many(std::slice::from_ref(vm), kind);
    }

    /// Publishes one event of `kind` per VM, back to back on one connection (as a batch
    /// `vm stop` does).
    pub(crate) fn publish_many(&self, vms: &[VmId], kind: EventKind) {
        self.publish_at(vms, kind, banger_bus::now_ms());
    }

    /// Publishes one event of `kind` per VM, stamped `at_ms`.
    pub(crate) fn publish_at(&self, vms: &[VmId], kind: EventKind, at_ms: u64) {
        let url = self.nats.url();
        let events: Vec<VmEvent> = vms
            .iter()
            .map(|vm| VmEvent {
                kind,
                at_ms,
                seq: 1,
                vm: vm_info(vm, "evm", VmState::Stopped),
            })
            .collect();
        self.ns.block_on(move || async move {
            let bus = connect(&url).await;
            for event in &events {
                bus.publish_event(&host(), event).await.unwrap();
            }
            bus.client().flush().await.unwrap();
        });
    }

    /// Links in the namespace: (name, master name).
    pub(crate) fn links(&self) -> Vec<(String, Option<String>)> {
        ns_links(self.ns.name())
    }

    /// Names of taps (banger prefix) on the bridge.
    pub(crate) fn taps_on_bridge(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .links()
            .into_iter()
            .filter(|(n, m)| n.starts_with("bgr") && m.as_deref() == Some(&self.bridge))
            .map(|(n, _)| n)
            .collect();
        v.sort();
        v
    }

    /// Detaches a VM and expects success.
    pub(crate) fn detach(&self, vm: &VmId, release: bool) -> DetachReply {
        self.request::<net::Detach>(DetachRequest {
            vm_id: vm.clone(),
            release,
        })
        .unwrap_or_else(|e| panic!("detach {vm}: {e}"))
    }

    /// Sends `net.detach` for every (VM, release) at once, as a batch `vm stop` or `vm delete`
    /// does; each answer in order.
    pub(crate) fn detach_at_once(
        &self,
        vms: &[(VmId, bool)],
    ) -> Vec<Result<DetachReply, ApiError>> {
        let url = self.nats.url();
        let reqs: Vec<DetachRequest> = vms
            .iter()
            .map(|(vm, release)| DetachRequest {
                vm_id: vm.clone(),
                release: *release,
            })
            .collect();
        self.ns.block_on(move || async move {
            let bus = connect(&url).await;
            let me = host();
            let calls = reqs
                .iter()
                .map(|r| bus.call::<net::Detach>(&me, r, Duration::from_secs(30)));
            futures::future::join_all(calls)
                .await
                .into_iter()
                .map(|r| match r {
                    Ok(reply) => Ok(reply),
                    Err(RequestError::Remote(e)) => Err(e),
                    Err(e) => panic!("net.detach failed on the transport: {e}"),
                })
                .collect()
        })
    }

    /// Whether a link named `name` exists in the namespace.
    pub(crate) fn has_link(&self, name: &str) -> bool {
        self.links().iter().any(|(n, _)| n == name)
    }

    /// The nftables table as nft prints it, or None when it is absent.
    pub(crate) fn table_text(&self) -> Option<String> {
        let out = self
            .ns
            .command("nft")
            .args(["list", "table", "ip", &self.table])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The rules of the nftables table as `nft -j` prints them (the `rule` objects).
    pub(crate) fn table_rules_json(&self) -> Vec<serde_json::Value> {
        let out = self
            .ns
            .exec(&["nft", "-j", "list", "table", "ip", &self.table]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule").cloned())
            .collect()
    }

    /// Waits until `cond` holds.
    pub(crate) fn wait(&self, what: &str, cond: impl FnMut() -> bool) {
        wait_until_blocking(what, Duration::from_secs(30), cond);
    }

    /// Checks nothing of this fixture exists outside its namespace.
    pub(crate) fn assert_nothing_leaked(&self) {
        let links = run_ok(Command::new("ip").args(["-o", "link"]));
        assert!(
            !links.contains(&self.bridge),
            "bridge {} leaked to the host",
            self.bridge
        );
        let tables = run_ok(Command::new("nft").args(["list", "tables"]));
        assert!(
            !tables.contains(&self.table),
            "table {} leaked to the host",
            self.table
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut p) = self.netd.take() {
            p.terminate(Duration::from_secs(10));
        }
    }
}

/// Starts a nats-server listening on `ns`'s loopback.
///
/// `NatsServer::start_in` probes the server's `/healthz` from the calling thread, which is in
/// the host's namespace, so it never sees the server. Starting it from a thread that has entered
/// the namespace puts the child process, the free-port probe and the readiness probe all in
/// the namespace.
pub(crate) fn nats_in(ns: &NetNs) -> NatsServer {
    ns.run(NatsServer::start)
}

/// The fixtures' host id.
pub(crate) fn host() -> HostId {
    HostId::new(HOST).unwrap()
}

/// Connects to the bus (call inside the namespace).
pub(crate) async fn connect(url: &str) -> Bus {
    let client = async_nats::connect(url).await.unwrap();
    Bus::new(client, Subjects::default())
}

/// A VM id made of `n`.
pub(crate) fn vm_id(n: u32) -> VmId {
    VmId::new(format!("{n:08x}{}", "a".repeat(24))).unwrap()
}

/// A VM snapshot for events and a fake controller.
pub(crate) fn vm_info(id: &VmId, name: &str, state: VmState) -> VmInfo {
    VmInfo {
        id: id.clone(),
        name: VmName::new(name).unwrap(),
        host: host(),
        state,
        image: ImageName::new("debian").unwrap(),
        cpus: CpuCount::new(1).unwrap(),
        memory_mib: MemMib::new(256).unwrap(),
        disk_mib: MemMib::new(1024).unwrap(),
        network: None,
        port_forwards: vec![],
        reason: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        started_at_ms: None,
        touched_at_ms: None,
    }
}

/// Links of namespace `ns`: (name, master name).
pub(crate) fn ns_links(ns: &str) -> Vec<(String, Option<String>)> {
    let out = run_ok(Command::new("ip").args(["-n", ns, "-j", "link", "show"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_owned(),
                l["master"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Copies frames between two tap descriptors in both directions until dropped: the "wire"
/// between a VM's host tap and the guest's `eth0`, as the hypervisor would be.
pub(crate) struct Wire {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Wire {
    /// Connects `a` and `b`.
    pub(crate) fn connect(a: OwnedFd, b: OwnedFd) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let a = Arc::new(a);
        let b = Arc::new(b);
        let threads = [(a.clone(), b.clone()), (b, a)]
            .into_iter()
            .map(|(from, to)| {
                let stop = stop.clone();
                std::thread::spawn(move || copy_frames(&from, &to, &stop))
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn copy_frames(from: &OwnedFd, to: &OwnedFd, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for a descriptor we own, and the count says one.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, 100) };
        if ready == 0 || (ready < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR) {
            continue;
        }
        if ready < 0 || pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
        match nix::unistd::read(from, &mut buf) {
            Ok(n) if n > 0 => {
                let _ = nix::unistd::write(to, &buf[..n]);
            }
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}
