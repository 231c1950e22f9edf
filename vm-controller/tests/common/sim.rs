//! The real stack in a private network namespace, for `tests/sim_stack.rs` and the lifecycle
//! bench: nats-server, stord, netd and the controller (with the Firecracker SIMULATOR) as
//! processes inside one `NetNs`.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use banger_bus::{Bus, RequestError};
use banger_proto::agent::{ExecRequest, ExecResult};
use banger_proto::op::{Lab, Operation, net, store, vm};
use banger_proto::store::{ImageInfo, RegisterImageRequest};
use banger_proto::vm::{CreateVmRequest, ListVmsRequest, VmExecRequest, VmInfo, VmRefRequest};
use banger_proto::{ApiError, HostId, ImageName, Subjects};
use banger_testkit::netns::NetNs;
use banger_testkit::{NatsServer, Process};

pub const HOST: &str = "simhost";
const BINS: &[&str] = &[
    "banger-fcsim",
    "banger-stord",
    "banger-netd",
    "banger-agent",
    "banger-vm-controller",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The target dir's binaries, or why the test cannot run.
pub fn bins() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target dir")?
        .to_owned();
    for b in BINS {
        if !dir.join(b).is_file() {
            return Err(format!(
                "{b} is not built in {}: cargo build -p banger-fcsim -p banger-stord -p \
                 banger-netd -p banger-agent -p banger-vm-controller",
                dir.display()
            ));
        }
    }
    if !banger_testkit::have_program("mkfs.ext4") {
        return Err("mkfs.ext4 is not installed".into());
    }
    Ok(dir)
}

pub fn host() -> HostId {
    HostId::new(HOST).unwrap()
}

/// nats-server, stord, netd and the controller inside one namespace.
pub struct Stack {
    // Dropped in this order: the services (SIGTERM) while the bus is still up, then the bus,
    // the files, and last the namespace.
    pub procs: Vec<Process>,
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub ns: NetNs,
    pub bins: PathBuf,
}

impl Stack {
    pub fn start(bins: PathBuf, grace_ms: u64, fcsim_faults: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 100_000;
        let ns = NetNs::create("vc");
        // Started from a thread inside the namespace, so the server and its readiness probe live there.
        let nats = ns.run(NatsServer::start);
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[netd]\nbridge = \"bv{pid}x{n}\"\nsubnet = \"10.{}.{}.0/24\"\n\
             nft_table = \"bv_{pid}_{n}\"\nreconcile_interval_secs = 3600\n\
             reconcile_grace_secs = 0\n\n\
             [stord]\ndefault_disk_mib = 64\n\n\
             [vm-controller]\nvmm = \"sim\"\nsim_bin = \"{}\"\nstop_grace_ms = {grace_ms}\n\
             reconcile_interval_ms = 1000\n",
            150 + n % 100,
            pid % 250,
            bins.join("banger-fcsim").display()
        );
        std::fs::write(dir.path().join("banger.toml"), config).unwrap();
        let mut s = Self {
            ns,
            nats,
            dir,
            bins,
            procs: Vec::new(),
        };
        s.spawn("banger-stord", &[]);
        s.spawn("banger-netd", &[]);
        s.spawn(
            "banger-vm-controller",
            &[("BANGER_FCSIM_FAULTS", fcsim_faults)],
        );
        s.wait_ready();
        s
    }

    pub fn spawn(&mut self, bin: &str, env: &[(&str, &str)]) {
        let mut cmd = self.ns.command(self.bins.join(bin).to_str().unwrap());
        cmd.args(["--nats-url", &self.nats.url(), "--host-id", HOST])
            .arg("--config")
            .arg(self.dir.path().join("banger.toml"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(self.dir.path().join("run"))
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.procs.push(Process::spawn(bin, cmd));
    }

    pub fn wait_ready(&self) {
        self.run(|bus| async move {
            banger_testkit::wait_until(
                "stord, netd and the controller",
                Duration::from_secs(60),
                || {
                    let bus = bus.clone();
                    async move {
                        let t = Duration::from_secs(2);
                        let store = bus
                            .call::<store::Capabilities>(
                                &host(),
                                &banger_proto::store::CapabilitiesRequest {},
                                t,
                            )
                            .await
                            .is_ok();
                        let net = bus
                            .call::<net::Status>(
                                &host(),
                                &banger_proto::net::NetStatusRequest {},
                                t,
                            )
                            .await
                            .is_ok();
                        let vms = bus
                            .call::<vm::List>(&Lab, &ListVmsRequest::default(), t)
                            .await
                            .is_ok();
                        store && net && vms
                    }
                },
            )
            .await;
        });
    }

    /// Runs `f` with a bus client on a thread inside the namespace.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Bus) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        let url = self.nats.url();
        self.ns.block_on(move || async move {
            let client = async_nats::connect(url).await.unwrap();
            f(Bus::new(client, Subjects::default())).await
        })
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run").join("vm-controller")
    }

    pub fn stord_volumes(&self) -> PathBuf {
        self.dir.path().join("state").join("stord").join("volumes")
    }
}

/// Simulator processes started (through the controller) for this stack's VMs.
pub fn simulator_pids(runtime: &Path) -> Vec<i32> {
    let pattern = format!("--api-sock {}", runtime.display());
    let out = Command::new("pgrep")
        .args(["-f", "--", &pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A failed test may leave VMs running (a controller shutdown never stops them): end
        // this stack's simulators, by pid, before the namespace goes.
        for pid in simulator_pids(&self.runtime_dir()) {
            // Through a pidfd, checked after opening: never whatever reused a pid meanwhile.
            if let Ok(fd) = banger_procid::PidFd::open(pid)
                && banger_procid::cmdline(pid).is_some_and(|args| {
                    args.windows(2).any(|w| {
                        w[0] == b"--api-sock"
                            && Path::new(std::ffi::OsStr::from_bytes(&w[1]))
                                .starts_with(self.runtime_dir())
                    })
                })
            {
                let _ = fd.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Operation `O` at `at`: its reply, or the error the service answered (a transport failure
/// fails the test).
pub async fn call<O: Operation>(
    bus: &Bus,
    at: &O::At,
    req: &O::Request,
    timeout: Duration,
) -> Result<O::Reply, ApiError> {
    bus.call::<O>(at, req, timeout).await.map_err(|e| match e {
        RequestError::Remote(api) => api,
        other => panic!("transport failure: {other}"),
    })
}

/// An operation on `vm` (`vm::Stop`, `vm::Stats`, ...) of this stack's controller.
pub async fn vm_op<O>(bus: &Bus, vm: &VmInfo) -> Result<O::Reply, ApiError>
where
    O: Operation<At = HostId, Request = VmRefRequest>,
{
    call::<O>(
        bus,
        &host(),
        &VmRefRequest { id: vm.id.clone() },
        Duration::from_secs(60),
    )
    .await
}

/// `vm create` through placement.
pub async fn create(bus: &Bus, name: &str, timeout: Duration) -> VmInfo {
    call::<vm::Place>(bus, &Lab, &create_req(name), timeout)
        .await
        .unwrap()
        .vm
}

pub async fn exec(bus: &Bus, vm: &VmInfo, argv: &[&str]) -> ExecResult {
    let req = VmExecRequest {
        id: vm.id.clone(),
        exec: ExecRequest::new(argv.iter().copied()),
    };
    call::<vm::Exec>(bus, &host(), &req, Duration::from_secs(60))
        .await
        .unwrap()
}

pub async fn register_image(bus: &Bus, dir: &Path) -> ImageInfo {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("root")).unwrap();
    std::fs::write(src.join("etc/hostname"), "image\n").unwrap();
    let rootfs = dir.join("rootfs.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&rootfs)
        .arg("64M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kernel = dir.join("vmlinux");
    std::fs::write(
        &kernel,
        b"\x7fELF not a kernel: the simulator never runs it",
    )
    .unwrap();
    let req = RegisterImageRequest {
        name: ImageName::new("debian").unwrap(),
        kernel: kernel.display().to_string(),
        initrd: None,
        rootfs: rootfs.display().to_string(),
        kernel_args: None,
        default_disk_mib: None,
    };
    call::<store::ImageRegister>(bus, &host(), &req, Duration::from_secs(60))
        .await
        .unwrap()
}

pub async fn wait_healthy(bus: &Bus, vm: &VmInfo) {
    banger_testkit::wait_until(
        "the guest agent to answer /healthz",
        Duration::from_secs(60),
        || {
            let (bus, vm) = (bus.clone(), vm.clone());
            async move { matches!(vm_op::<vm::Health>(&bus, &vm).await, Ok(h) if h.status == "ok") }
        },
    )
    .await;
}

pub fn create_req(name: &str) -> CreateVmRequest {
    serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
}

pub fn link_exists(dev: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", dev])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn dir_is_empty_or_missing(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}
