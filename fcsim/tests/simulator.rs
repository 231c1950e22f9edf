//! The simulator as banger uses it: a real process on a real API socket, configured only
//! through `banger_firecracker::FirecrackerClient`, reached through hybrid vsock with
//! `banger_agent_client::AgentClient`, and (as root) on a real tap in a private network
//! namespace and with a real loop-mounted ext4 work disk.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use banger_agent_client::{AgentClient, ExecRequest};
use banger_firecracker::FirecrackerClient;
use banger_firecracker::calls::ApiCall;
use banger_firecracker::models::{
    BootSource, Drive, InstanceState, MachineConfiguration, Metrics, NetworkInterface, Vsock,
};
use banger_testkit::netns::NetNs;
use banger_testkit::{Process, bin_path, have_program, require_root, skip, wait_until};
use serde_json::json;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// One simulator process with its own directory.
struct Sim {
    proc: Process,
    dir: PathBuf,
    api: PathBuf,
    vsock: PathBuf,
    fc: FirecrackerClient,
}

struct Opts<'a> {
    id: &'a str,
    faults: &'a [&'a str],
    env: Option<&'a str>,
    ns: Option<&'a NetNs>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Self {
            id: "sim",
            faults: &[],
            env: None,
            ns: None,
        }
    }
}

fn kernel(dir: &Path) -> PathBuf {
    let k = dir.join("vmlinux");
    std::fs::write(&k, b"not a kernel: the simulator only opens it").unwrap();
    k
}

/// A small real ext4 image (the simulator refuses a root drive that is not ext4); `None`
/// without `mkfs.ext4`.
fn ext4_image(dir: &Path, name: &str) -> Option<PathBuf> {
    if !have_program("mkfs.ext4") {
        return None;
    }
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(4 << 20).unwrap();
    banger_testkit::netns::run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&p));
    Some(p)
}

fn plain_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(4 << 20).unwrap();
    p
}

async fn spawn(dir: &Path, o: Opts<'_>) -> Sim {
    let bin = bin_path("banger-fcsim");
    let api = dir.join("api.sock");
    let mut cmd = match o.ns {
        Some(ns) => ns.command(bin.to_str().unwrap()),
        None => Command::new(&bin),
    };
    cmd.arg("--api-sock")
        .arg(&api)
        .args(["--id", o.id, "--level", "Debug", "--show-level"])
        .arg("--log-path")
        .arg(dir.join("vmm.log"))
        .arg("--agent-bin")
        .arg(bin_path("banger-agent"))
        .env_remove("BANGER_FCSIM_FAULTS");
    for f in o.faults {
        cmd.args(["--fault", f]);
    }
    if let Some(env) = o.env {
        cmd.env("BANGER_FCSIM_FAULTS", env);
    }
    let proc = Process::spawn("banger-fcsim", cmd);
    let probe = api.clone();
    wait_until("the api socket", WAIT, || {
        let p = probe.clone();
        async move { tokio::net::UnixStream::connect(&p).await.is_ok() }
    })
    .await;
    Sim {
        proc,
        dir: dir.to_owned(),
        vsock: dir.join("vsock.sock"),
        fc: FirecrackerClient::new(&api),
        api,
    }
}

impl Sim {
    /// What vm-controller sends, less the network interface.
    async fn configure(&self, boot_args: &str, root: &Path, work: &Path) {
        self.fc
            .put_machine_config(&MachineConfiguration::new(2, 256))
            .await
            .unwrap();
        self.fc
            .put_boot_source(&BootSource {
                kernel_image_path: kernel(&self.dir),
                boot_args: Some(boot_args.to_owned()),
                initrd_path: None,
            })
            .await
            .unwrap();
        self.fc
            .put_drive(&Drive::new("rootfs", root, true, false))
            .await
            .unwrap();
        self.fc
            .put_drive(&Drive::new("work", work, false, false))
            .await
            .unwrap();
        self.fc
            .put_vsock(&Vsock::new(3, &self.vsock))
            .await
            .unwrap();
    }

    /// Configures an ext4 root and a plain work disk; `false` (the test is skipped) without
    /// `mkfs.ext4`.
    async fn configure_plain(&self) -> bool {
        let Some(root) = ext4_image(&self.dir, "root.img") else {
            skip("no mkfs.ext4 (apt-get install e2fsprogs)");
            return false;
        };
        let work = plain_file(&self.dir, "work.img");
        self.configure("console=ttyS0 reboot=k panic=1", &root, &work)
            .await;
        true
    }

    fn agent(&self) -> AgentClient {
        AgentClient::new(self.vsock.clone(), 52).with_timeout(Duration::from_secs(2))
    }

    async fn wait_healthy(&self) {
        let agent = self.agent();
        wait_until("the agent's /healthz through hybrid vsock", WAIT, || {
            let a = agent.clone();
            async move { a.health().await.is_ok_and(|h| h.status == "ok") }
        })
        .await;
    }

    /// Waits for the process to exit on its own; returns its status (already reaped, so
    /// `terminate` only collects it).
    async fn wait_exit(&mut self) -> ExitStatus {
        wait_until("the simulator to exit", WAIT, || {
            let running = self.proc.is_running();
            async move { !running }
        })
        .await;
        self.proc
            .terminate(Duration::from_secs(1))
            .expect("an exit status")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vmm.log")).unwrap_or_default()
    }
}

/// The processes naming `/tmp/banger-fcsim-<pid>/` on their command line: the host's agent
/// serving its socket there and, as root, the guest's init and the `unshare` that made its
/// namespaces.
fn agents_of(sim_pid: u32) -> Vec<u32> {
    let needle = format!("banger-fcsim-{sim_pid}/");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // The agent itself, not the guest's init (`unshare` and its shell) that names the same
        // directory.
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "banger-agent")
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[tokio::test]
async fn configured_through_the_client_it_boots_serves_the_agent_and_exits_on_ctrl_alt_del() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(tmp.path(), Opts::default()).await;
    let info = sim.fc.describe_instance().await.unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    assert_eq!(info.app_name, "Firecracker");
    assert!(info.vmm_version.contains("SIMULATOR"), "{info:?}");
    assert!(
        sim.fc
            .version()
            .await
            .unwrap()
            .firecracker_version
            .contains("SIMULATOR")
    );
    // Ctrl+Alt+Del before a boot is a wrong-state action.
    let err = sim.fc.send_ctrl_alt_del().await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.fault_message().unwrap().contains("before starting"),
        "{err}"
    );

    if !sim.configure_plain().await {
        return;
    }
    let metrics = tmp.path().join("metrics.json");
    sim.fc
        .put_metrics(&Metrics {
            metrics_path: metrics.clone(),
            emit_id: Some(true),
            properties: None,
        })
        .await
        .unwrap();
    assert_eq!(sim.fc.get_machine_config().await.unwrap().vcpu_count, 2);
    sim.fc.instance_start().await.unwrap();
    assert_eq!(
        sim.fc.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    sim.wait_healthy().await;

    // The simulator's replies match the definition too.
    let schema = banger_firecracker::schema::ApiSchema::firecracker().unwrap();
    for (path, def) in [
        ("/", "InstanceInfo"),
        ("/version", "FirecrackerVersion"),
        ("/machine-config", "MachineConfiguration"),
        ("/vm/config", "FullVmConfiguration"),
    ] {
        let call = ApiCall {
            name: "get",
            method: "GET",
            path: path.into(),
            definition: None,
            body: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&sim.fc.execute(&call).await.unwrap()).unwrap();
        schema
            .validate(def, &body)
            .unwrap_or_else(|e| panic!("GET {path}: {body} violates {def}: {e}"));
    }

    sim.fc.flush_metrics().await.unwrap();
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().trim()).unwrap();
    assert_eq!(line["instance_id"], "sim");
    assert_eq!(line["simulator"], "banger-fcsim");

    sim.fc.pause().await.unwrap();
    assert_eq!(
        sim.fc.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    sim.fc.resume().await.unwrap();
    sim.wait_healthy().await;

    let serial_pid = sim.proc.pid();
    assert!(
        !agents_of(serial_pid).is_empty(),
        "the agent runs while the guest is up"
    );
    sim.fc.send_ctrl_alt_del().await.unwrap();
    let status = sim.wait_exit().await;
    assert!(status.success(), "{status}");
    assert!(!sim.api.exists(), "api socket removed");
    assert!(!sim.vsock.exists(), "vsock socket removed");
    assert!(agents_of(serial_pid).is_empty(), "no agent left behind");
    assert!(!Path::new(&format!("/tmp/banger-fcsim-{serial_pid}")).exists());
    let log = sim.log();
    assert!(log.contains("SIMULATOR"), "{log}");
}

#[tokio::test]
async fn a_body_that_violates_the_definition_gets_a_400_with_fault_message() {
    let tmp = TempDir::new().unwrap();
    let sim = spawn(tmp.path(), Opts::default()).await;
    let root = plain_file(tmp.path(), "root.img");
    let typo = ApiCall {
        name: "put_drive",
        method: "PUT",
        path: "/drives/rootfs".into(),
        definition: Some("Drive"),
        body: Some(json!({
            "drive_id": "rootfs",
            "path_on_host": root,
            "is_root_device": true,
            "is_readonly": false
        })),
    };
    let err = sim.fc.execute(&typo).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.fault_message()
            .unwrap()
            .contains("unknown field `is_readonly`"),
        "{err}"
    );

    let wrong_type = ApiCall {
        name: "put_machine_config",
        method: "PUT",
        path: "/machine-config".into(),
        definition: Some("MachineConfiguration"),
        body: Some(json!({"vcpu_count": "two", "mem_size_mib": 128})),
    };
    let err = sim.fc.execute(&wrong_type).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.fault_message().unwrap().contains("vcpu_count"), "{err}");

    let no_route = ApiCall {
        name: "nope",
        method: "PUT",
        path: "/no-such-thing".into(),
        definition: None,
        body: None,
    };
    let err = sim.fc.execute(&no_route).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.fault_message()
            .unwrap()
            .contains("Invalid request method and/or path")
    );

    // Path and body ids must agree; a missing backing file is refused at PUT.
    let mut d = Drive::new("rootfs", &root, true, false);
    d.drive_id = "other".into();
    let mismatch = banger_firecracker::calls::put_drive(&d).unwrap();
    let mismatch = ApiCall {
        path: "/drives/rootfs".into(),
        ..mismatch
    };
    assert_eq!(
        sim.fc.execute(&mismatch).await.unwrap_err().status(),
        Some(400)
    );
    let err = sim
        .fc
        .put_drive(&Drive::new(
            "rootfs",
            tmp.path().join("missing.img"),
            true,
            false,
        ))
        .await
        .unwrap_err();
    assert!(
        err.fault_message().unwrap().contains("missing.img"),
        "{err}"
    );
    // InstanceStart without a boot source.
    let err = sim.fc.instance_start().await.unwrap_err();
    assert!(
        err.fault_message()
            .unwrap()
            .contains("kernel configuration"),
        "{err}"
    );
    // The process survived every bad request.
    assert_eq!(
        sim.fc.describe_instance().await.unwrap().state,
        InstanceState::NotStarted
    );
}

#[tokio::test]
async fn pre_boot_requests_after_start_are_rejected_like_firecracker() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(tmp.path(), Opts::default()).await;
    if !sim.configure_plain().await {
        return;
    }
    sim.fc.instance_start().await.unwrap();
    let msg = "The requested operation is not supported after starting the microVM.";
    let err = sim
        .fc
        .put_machine_config(&MachineConfiguration::new(4, 512))
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.fault_message()), (Some(400), Some(msg)));
    let err = sim
        .fc
        .put_drive(&Drive::new(
            "extra",
            tmp.path().join("root.img"),
            false,
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.fault_message(), Some(msg));
    let err = sim.fc.instance_start().await.unwrap_err();
    assert_eq!(err.fault_message(), Some(msg));
    assert_eq!(sim.fc.get_machine_config().await.unwrap().vcpu_count, 2);
    sim.proc.terminate(WAIT).unwrap();
    assert!(!sim.api.exists(), "SIGTERM removes the api socket");
}

#[tokio::test]
async fn fault_ignore_ctrl_alt_del_keeps_the_guest_running_until_sigterm() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(
        tmp.path(),
        Opts {
            faults: &["ignore-ctrl-alt-del"],
            ..Opts::default()
        },
    )
    .await;
    if !sim.configure_plain().await {
        return;
    }
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;
    sim.fc.send_ctrl_alt_del().await.unwrap();
    // Still answering, still running, agent still healthy.
    assert_eq!(
        sim.fc.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    sim.agent().health().await.unwrap();
    assert!(sim.proc.is_running());
    assert!(sim.log().contains("ignore-ctrl-alt-del"));
    let pid = sim.proc.pid();
    let status = sim.proc.terminate(WAIT).unwrap();
    assert!(status.success(), "{status}");
    assert!(agents_of(pid).is_empty());
}

#[tokio::test]
async fn fault_slow_boot_delays_the_agent() {
    let tmp = TempDir::new().unwrap();
    let sim = spawn(
        tmp.path(),
        Opts {
            faults: &["slow-boot=3000"],
            ..Opts::default()
        },
    )
    .await;
    if !sim.configure_plain().await {
        return;
    }
    sim.fc.instance_start().await.unwrap();
    // Booted as far as the VMM is concerned, but nothing listens on the agent port yet: the
    // hybrid vsock connection is closed without an OK line.
    assert_eq!(
        sim.fc.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    assert!(sim.agent().health().await.is_err());
    sim.wait_healthy().await;
}

#[tokio::test]
async fn an_agent_that_exits_is_the_guests_init_dying_and_panic_1_reboots_so_the_vmm_exits_0() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(tmp.path(), Opts::default()).await;
    // Boot arguments with `panic=1`, as banger's defaults.
    if !sim.configure_plain().await {
        return;
    }
    let pid = sim.proc.pid();
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;
    let agents = agents_of(pid);
    assert_eq!(agents.len(), 1, "{agents:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agents[0]).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The kernel reboots a second after the panic, and Firecracker exits 0 on a guest reboot.
    let status = sim.wait_exit().await;
    assert!(status.success(), "{status}");
    let log = sim.log();
    assert!(
        log.contains("the agent, the guest's init, exited on its own: signal: 9"),
        "{log}"
    );
    assert!(
        log.contains("the guest rebooted after a kernel panic"),
        "{log}"
    );
    assert!(!sim.api.exists(), "a clean exit removes the API socket");
}

#[tokio::test]
async fn fault_crash_after_exits_non_zero_and_leaves_the_socket() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(
        tmp.path(),
        Opts {
            faults: &["crash-after=200"],
            ..Opts::default()
        },
    )
    .await;
    if !sim.configure_plain().await {
        return;
    }
    let pid = sim.proc.pid();
    sim.fc.instance_start().await.unwrap();
    let status = sim.wait_exit().await;
    assert!(!status.success(), "{status}");
    assert!(sim.api.exists(), "a crashed VMM leaves its socket");
    assert!(
        sim.fc
            .describe_instance()
            .await
            .unwrap_err()
            .is_unreachable()
    );
    // The agent dies with it (PR_SET_PDEATHSIG).
    wait_until("the agent to die with the VMM", WAIT, || {
        let gone = agents_of(pid).is_empty();
        async move { gone }
    })
    .await;
    assert!(!Path::new(&format!("/tmp/banger-fcsim-{pid}")).exists());
}

#[tokio::test]
async fn fault_leave_socket_from_the_environment_for_this_vm_only() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(
        tmp.path(),
        Opts {
            id: "web",
            env: Some("db=refuse-api;web=leave-socket"),
            ..Opts::default()
        },
    )
    .await;
    if !sim.configure_plain().await {
        return;
    }
    sim.fc.instance_start().await.unwrap();
    sim.fc.send_ctrl_alt_del().await.unwrap();
    let status = sim.wait_exit().await;
    assert!(status.success(), "{status}");
    assert!(sim.api.exists(), "leave-socket keeps the api socket file");
    assert!(sim.vsock.exists(), "and the vsock one");
    assert!(
        sim.fc
            .describe_instance()
            .await
            .unwrap_err()
            .is_unreachable()
    );
}

#[tokio::test]
async fn fault_refuse_api_binds_but_never_answers() {
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(
        tmp.path(),
        Opts {
            faults: &["refuse-api"],
            ..Opts::default()
        },
    )
    .await;
    let err = sim
        .fc
        .clone()
        .with_timeout(Duration::from_millis(300))
        .describe_instance()
        .await
        .unwrap_err();
    assert!(
        matches!(err, banger_firecracker::ClientError::Timeout { .. }),
        "{err}"
    );
    let status = sim.proc.terminate(WAIT).unwrap();
    assert!(status.success(), "{status}");
}

/// A bridge with an address and a persistent tap on it, in a private namespace: what netd
/// builds for a VM.
fn bridge_and_tap(ns: &NetNs) {
    ns.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
    ns.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", "br0"]);
    ns.exec(&["ip", "link", "set", "br0", "up"]);
    ns.exec(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ns.exec(&["ip", "link", "set", "tap0", "master", "br0"]);
    ns.exec(&["ip", "link", "set", "tap0", "up"]);
}

/// The network namespace of `pid` (`net:[4026532...]`).
fn netns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

/// The threads of every process that are in network namespace `ns`.
fn members_of_netns(ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(tasks) = std::fs::read_dir(proc_entry.path().join("task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            if std::fs::read_link(task.path().join("ns/net"))
                .is_ok_and(|l| l.display().to_string() == ns)
            {
                found.push(task.path().display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_guest_namespace_answers_arp_ping_and_tcp_through_the_real_tap() {
    if !require_root() {
        return;
    }
    for p in [
        "ping",
        "python3",
        "mkfs.ext4",
        "losetup",
        "unshare",
        "mount",
    ] {
        if !have_program(p) {
            skip(&format!("no {p}"));
            return;
        }
    }
    let ns = NetNs::create("fcs");
    bridge_and_tap(&ns);
    let links_before = ns.exec(&["ip", "-o", "link", "show"]).lines().count();
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(
        tmp.path(),
        Opts {
            ns: Some(&ns),
            ..Opts::default()
        },
    )
    .await;
    let root = ext4_image(tmp.path(), "root.img").unwrap();
    // As vm-controller runs it: with the work disk loop-mounted at /root as well.
    let work = ext4_image(tmp.path(), "work.img").unwrap();
    sim.configure(
        "console=ttyS0 reboot=k ip=10.77.0.2::10.77.0.1:255.255.255.0:vm1:eth0:off",
        &root,
        &work,
    )
    .await;
    // A MAC that is not one is refused.
    let err = sim
        .fc
        .put_network_interface(&NetworkInterface::new("eth0", "tap0", "06:00:0a:4d:00"))
        .await
        .unwrap_err();
    assert!(err.fault_message().unwrap().contains("MAC"), "{err}");
    sim.fc
        .put_network_interface(&NetworkInterface::new("eth0", "tap0", "06:00:0a:4d:00:02"))
        .await
        .unwrap();
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;

    // The agent runs in a network namespace of its own: not the host side's, with eth0 set up
    // from guest_mac and ip=.
    // (The guest's init and `unshare` name the guest directory too: the agent is the one
    // running banger-agent.)
    let agents: Vec<u32> = agents_of(sim.proc.pid())
        .into_iter()
        .filter(|p| {
            banger_procid::cmdline(i32::try_from(*p).unwrap())
                .and_then(|args| args.first().cloned())
                .is_some_and(|argv0| argv0.ends_with(b"banger-agent"))
        })
        .collect();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let guest_ns = netns_of(agents[0]).unwrap();
    assert_ne!(Some(&guest_ns), netns_of(sim.proc.pid()).as_ref());
    let agent = sim.agent().with_timeout(WAIT);
    let sh = |script: &'static str| ExecRequest::new(["sh", "-c", script]);
    assert!(!loops_of(&work).is_empty(), "the work disk is loop-mounted");
    let out = agent
        .exec_collect(&sh(
            "ip -o addr show dev eth0; ip link show dev eth0; ip route",
        ))
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(out.stdout.contains("inet 10.77.0.2/24"), "{out:?}");
    assert!(
        out.stdout.contains("link/ether 06:00:0a:4d:00:02"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("default via 10.77.0.1 dev eth0"),
        "{out:?}"
    );
    let out = agent.exec_collect(&sh("hostname")).await.unwrap();
    assert_eq!(
        out.stdout, "vm1\n",
        "the ip= hostname, in the guest's UTS namespace"
    );

    // Ping from the host side, answered by the guest namespace's kernel.
    assert!(
        ns.try_exec(&["ping", "-c1", "-W2", "10.77.0.2"]),
        "ping of the guest address across the tap and bridge"
    );
    let neigh = ns.exec(&["ip", "neigh", "show", "10.77.0.2", "dev", "br0"]);
    assert!(
        neigh.contains("06:00:0a:4d:00:02"),
        "ARP learnt the guest MAC: {neigh}"
    );
    // Nobody else is answered.
    assert!(!ns.try_exec(&["ping", "-c1", "-W1", "10.77.0.3"]));
    // And the guest reaches the host side through its default route.
    let out = agent
        .exec_collect(&sh("ping -c1 -W2 10.77.0.1"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "guest -> gateway ping: {out:?}");

    // TCP: a one-shot server in the guest (started through the agent), a client on the host
    // side of the bridge.
    let server = r#"import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(1)
s.settimeout(20)
c, peer = s.accept()
c.sendall(b"hello from the guest\n")
c.close()
print(peer[0])
"#;
    let guest_agent = agent.clone();
    let served = tokio::spawn(async move {
        guest_agent
            .exec_collect(&ExecRequest::new(["python3", "-c", server]))
            .await
    });
    // Each attempt is a fresh client process on the host side (refused, by a real RST from
    // the guest's kernel, until the server listens).
    let client = "import socket\n\
                  c = socket.create_connection(('10.77.0.2', 7000), timeout=2)\n\
                  print(c.makefile().read(), end='')";
    let reply = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_until("a TCP answer from the guest's port 7000", WAIT, || {
        let mut cmd = tokio::process::Command::from(ns.command("python3"));
        cmd.args(["-c", client]);
        let reply = std::sync::Arc::clone(&reply);
        async move {
            let Ok(out) = cmd.output().await else {
                return false;
            };
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            *reply.lock().unwrap() = text;
            out.status.success()
        }
    })
    .await;
    let reply = reply.lock().unwrap().clone();
    assert_eq!(reply, "hello from the guest\n");
    let out = served.await.unwrap().unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "10.77.0.1",
        "the guest saw the bridge address"
    );

    sim.fc.pause().await.unwrap();
    assert!(
        !ns.try_exec(&["ping", "-c1", "-W1", "10.77.0.2"]),
        "a paused guest is silent"
    );
    sim.fc.resume().await.unwrap();
    assert!(
        ns.try_exec(&["ping", "-c1", "-W2", "10.77.0.2"]),
        "a resumed guest answers again"
    );
    let pid = sim.proc.pid();
    // Everything in the guest namespace now: the agent and the simulator's guest thread (the
    // server the agent ran has exited). The namespace's inode number may be reused by another
    // namespace as soon as it is freed, so what is checked afterwards is that these are gone.
    let members = members_of_netns(&guest_ns);
    assert!(
        members
            .iter()
            .any(|t| t.starts_with(&format!("/proc/{}/", agents[0]))),
        "{members:?}"
    );
    assert!(
        members
            .iter()
            .any(|t| t.starts_with(&format!("/proc/{pid}/"))),
        "{members:?}"
    );
    sim.fc.send_ctrl_alt_del().await.unwrap();
    assert!(sim.wait_exit().await.success());
    // The tap is netd's (persistent): it stays, but nothing holds it any more.
    assert!(ns.try_exec(&["ip", "link", "show", "tap0"]));
    assert!(!ns.try_exec(&["ping", "-c1", "-W1", "10.77.0.2"]));
    // Nothing is left: no agent, no task that was in the guest namespace (the simulator that
    // held eth0's fd exited too, so the kernel removed the namespace and eth0), no new link on
    // the host side.
    assert!(agents_of(pid).is_empty(), "no agent left");
    let left: Vec<_> = members
        .iter()
        .filter(|t| Path::new(t.as_str()).exists())
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
    assert_eq!(
        loops_of(&work),
        "",
        "the work disk's loop device is released"
    );
    assert_eq!(
        ns.exec(&["ip", "-o", "link", "show"]).lines().count(),
        links_before
    );
}

#[tokio::test]
async fn a_root_drive_that_is_not_ext4_fails_instance_start() {
    let tmp = TempDir::new().unwrap();
    let sim = spawn(tmp.path(), Opts::default()).await;
    let root = plain_file(tmp.path(), "root.img");
    let work = plain_file(tmp.path(), "work.img");
    sim.configure("console=ttyS0 reboot=k", &root, &work).await;
    let err = sim.fc.instance_start().await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.fault_message().unwrap().contains("not an ext4 image"),
        "{err}"
    );
    assert_eq!(
        sim.fc.describe_instance().await.unwrap().state,
        InstanceState::NotStarted
    );
    assert!(agents_of(sim.proc.pid()).is_empty(), "nothing was started");
}

fn loops_of(image: &Path) -> String {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_file_written_on_the_work_disk_survives_a_restart_and_no_loop_device_leaks() {
    if !require_root() {
        return;
    }
    for p in ["mkfs.ext4", "losetup", "unshare", "mount"] {
        if !have_program(p) {
            skip(&format!("no {p}"));
            return;
        }
    }
    let tmp = TempDir::new().unwrap();
    let work = tmp.path().join("work.ext4");
    std::fs::File::create(&work)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    banger_testkit::netns::run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&work));
    let root = ext4_image(tmp.path(), "root.img").unwrap();
    let marker = format!("fcsim-test-{}", std::process::id());
    let host_file = Path::new("/root").join(&marker);
    assert!(!host_file.exists());
    let before = loops_of(&work);
    assert_eq!(before, "", "the image is not attached yet");

    for round in 0..2 {
        let dir = tmp.path().join(format!("run{round}"));
        std::fs::create_dir(&dir).unwrap();
        let mut sim = spawn(&dir, Opts::default()).await;
        sim.configure("console=ttyS0 reboot=k", &root, &work).await;
        sim.fc.instance_start().await.unwrap();
        sim.wait_healthy().await;
        assert!(!loops_of(&work).is_empty(), "the work disk is loop-mounted");
        let script = if round == 0 {
            format!("echo hi > /root/{marker}")
        } else {
            format!("cat /root/{marker}")
        };
        let out = sim
            .agent()
            .exec_collect(&ExecRequest::new(["sh", "-c", script.as_str()]))
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        if round == 1 {
            assert_eq!(out.stdout, "hi\n", "the file written before the restart");
        }
        assert!(
            !host_file.exists(),
            "the mount is private to the guest's namespace"
        );
        let pid = sim.proc.pid();
        sim.fc.send_ctrl_alt_del().await.unwrap();
        assert!(sim.wait_exit().await.success());
        assert_eq!(
            loops_of(&work),
            "",
            "the loop device is released on shutdown"
        );
        assert!(agents_of(pid).is_empty(), "no agent left");
    }
}

/// A root tree holding the real agent at `/usr/local/bin/banger-agent` with the C library it
/// needs, `sh`, `cat` and `sleep`, and an os-release that names it: what `banger image build`
/// leaves in an image, reduced to what the test needs.
fn image_tree_with_agent(tree: &Path) {
    for d in ["usr/local/bin", "bin", "etc", "root"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy(
        bin_path("banger-agent"),
        tree.join("usr/local/bin/banger-agent"),
    )
    .unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=fcsim-test-image\n").unwrap();
    let mut needed = vec![
        "/bin/sh".to_owned(),
        "/bin/cat".to_owned(),
        "/bin/sleep".to_owned(),
    ];
    for bin in [bin_path("banger-agent"), PathBuf::from("/bin/sleep")] {
        let ldd = Command::new("ldd").arg(bin).output().unwrap();
        needed.extend(
            String::from_utf8_lossy(&ldd.stdout)
                .split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(str::to_owned),
        );
    }
    for path in needed {
        let real = std::fs::canonicalize(&path).unwrap();
        let dest = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(real, dest).unwrap();
    }
}

/// A root drive holding the agent (an ext4 image of [`image_tree_with_agent`]), an empty ext4
/// work disk and a run directory, all under the returned temp dir; `None` (skipped, with the
/// reason) when a program the chroot mode needs is missing.
fn image_with_agent_and_work_disk() -> Option<(TempDir, PathBuf, PathBuf, PathBuf)> {
    for p in [
        "mkfs.ext4",
        "losetup",
        "unshare",
        "mount",
        "chroot",
        "debugfs",
        "ldd",
    ] {
        if !have_program(p) {
            skip(&format!("no {p}"));
            return None;
        }
    }
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    image_tree_with_agent(&tree);
    let root = tmp.path().join("root.ext4");
    std::fs::File::create(&root)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    banger_testkit::netns::run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&root),
    );
    let work = tmp.path().join("work.ext4");
    std::fs::File::create(&work)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    banger_testkit::netns::run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&work));
    let dir = tmp.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    Some((tmp, root, work, dir))
}

#[tokio::test]
async fn ctrl_alt_del_right_after_instance_start_stops_the_starting_guest_gracefully() {
    if !require_root() {
        return;
    }
    // Regression: a SIGTERM that reached the guest before its init had a trap (or before
    // `unshare` had forked the init) was lost, and the VMM exited only after the 6 s grace,
    // by killing the agent (`vm stop` right after `vm start` took 6 s).
    for round in 0..14 {
        let Some((_tmp, root, work, dir)) = image_with_agent_and_work_disk() else {
            return;
        };
        let mut sim = spawn(&dir, Opts::default()).await;
        sim.configure("console=ttyS0 reboot=k", &root, &work).await;
        sim.fc.instance_start().await.unwrap();
        // Not a synchronisation: the delay is what the test varies, so that CtrlAltDel lands
        // at every stage of the guest's start (the window was ~3-10 ms after InstanceStart).
        tokio::time::sleep(Duration::from_millis(round)).await;
        sim.fc.send_ctrl_alt_del().await.unwrap();
        assert!(sim.wait_exit().await.success(), "round {round}");
        let log = sim.log();
        assert!(!log.contains("ignored SIGTERM"), "round {round}: {log}");
        assert_eq!(loops_of(&root), "", "round {round}: root drive released");
        assert_eq!(loops_of(&work), "", "round {round}: work disk released");
    }
}

#[tokio::test]
async fn an_image_with_the_agent_runs_it_chrooted_and_releases_both_loop_devices() {
    if !require_root() {
        return;
    }
    let Some((tmp, root, work, dir)) = image_with_agent_and_work_disk() else {
        return;
    };
    let mut sim = spawn(&dir, Opts::default()).await;
    sim.configure("console=ttyS0 reboot=k", &root, &work).await;
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;
    assert!(
        sim.log().contains("runs from inside image"),
        "{}",
        sim.log()
    );
    assert!(
        !loops_of(&root).is_empty(),
        "the root drive is loop-mounted"
    );
    assert!(!loops_of(&work).is_empty(), "the work disk is loop-mounted");
    let agent = sim.agent();
    // The image's files, not the host's.
    let os = agent
        .exec_collect(&ExecRequest::new(["cat", "/etc/os-release"]))
        .await
        .unwrap();
    assert_eq!(os.stdout, "ID=fcsim-test-image\n", "{os:?}");
    // /root is the work disk, inside the image.
    let out = agent
        .exec_collect(&ExecRequest::new([
            "sh",
            "-c",
            "echo on-work > /root/f && cat /root/f",
        ]))
        .await
        .unwrap();
    assert_eq!(out.stdout, "on-work\n", "{out:?}");
    assert!(!tmp.path().join("tree/root/f").exists());
    // A daemon left behind by a command must not keep the loop devices.
    let daemon = agent
        .exec_collect(&ExecRequest::new([
            "sh",
            "-c",
            "sleep 600 </dev/null >/dev/null 2>&1 &",
        ]))
        .await
        .unwrap();
    assert_eq!(daemon.exit_code, Some(0), "{daemon:?}");
    sim.fc.send_ctrl_alt_del().await.unwrap();
    assert!(sim.wait_exit().await.success());
    assert_eq!(
        loops_of(&root),
        "",
        "the root drive's loop device is released"
    );
    assert_eq!(
        loops_of(&work),
        "",
        "the work disk's loop device is released"
    );
    // The work disk kept the file.
    let dump = Command::new("debugfs")
        .args(["-R", "cat /f"])
        .arg(&work)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dump.stdout), "on-work\n");
}

#[tokio::test]
async fn an_image_without_the_agent_runs_the_hosts_and_says_so() {
    if !require_root() {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let mut sim = spawn(tmp.path(), Opts::default()).await;
    if !sim.configure_plain().await {
        return;
    }
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;
    assert!(
        sim.log().contains("SIMULATOR: image") && sim.log().contains("has no agent"),
        "{}",
        sim.log()
    );
    sim.fc.send_ctrl_alt_del().await.unwrap();
    assert!(sim.wait_exit().await.success());
}

#[tokio::test]
async fn a_crash_with_the_image_agent_releases_both_loop_devices() {
    if !require_root() {
        return;
    }
    let Some((_tmp, root, work, dir)) = image_with_agent_and_work_disk() else {
        return;
    };
    let mut sim = spawn(
        &dir,
        Opts {
            faults: &["crash-after=4000"],
            ..Opts::default()
        },
    )
    .await;
    sim.configure("console=ttyS0 reboot=k", &root, &work).await;
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;
    assert!(
        !loops_of(&root).is_empty(),
        "the root drive is loop-mounted"
    );
    let status = sim.wait_exit().await;
    assert!(!status.success(), "the fault makes the simulator exit 1");
    // The agent died with the simulator (PDEATHSIG): its namespace, mounts and loop devices go.
    wait_until("both loop devices to be released", WAIT, || {
        let released = loops_of(&root).is_empty() && loops_of(&work).is_empty();
        async move { released }
    })
    .await;
}

/// Which agent the guest runs (see `fcsim/src/guest/agent.rs`).
#[derive(Debug, Clone, Copy)]
enum AgentMode {
    /// The host's agent, alone (the work disk is not ext4: nothing to mount).
    Host,
    /// The host's agent with the ext4 work disk loop-mounted at /root.
    HostWithWorkDisk,
    /// The image's own agent, chrooted into the loop-mounted root drive.
    Image,
}

/// Live processes whose command line holds `needle` (arguments joined by spaces).
fn processes_with(needle: &str) -> Vec<banger_procid::PidFd> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let fd = banger_procid::PidFd::open(pid).ok()?;
            let args = banger_procid::cmdline(pid)?;
            let line = args
                .iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
                .join(" ");
            (line.contains(needle) && !fd.has_exited()).then_some(fd)
        })
        .collect()
}

/// Boots a guest in `mode`, has it start a daemon, SIGKILLs the simulator, and checks that
/// nothing of the guest is left: as under Firecracker, where a guest dies with its VMM.
async fn a_sigkilled_simulator_leaves_nothing(mode: AgentMode) {
    if !require_root() {
        return;
    }
    for p in ["mkfs.ext4", "losetup", "unshare", "mount"] {
        if !have_program(p) {
            skip(&format!("no {p}"));
            return;
        }
    }
    // A root drive, a work disk and a run directory for each mode.
    let (tmp, root, work, dir) = match mode {
        AgentMode::Image => {
            let Some(files) = image_with_agent_and_work_disk() else {
                return;
            };
            files
        }
        AgentMode::Host | AgentMode::HostWithWorkDisk => {
            let tmp = TempDir::new().unwrap();
            let root = ext4_image(tmp.path(), "root.img").unwrap();
            let work = match mode {
                AgentMode::Host => plain_file(tmp.path(), "work.img"),
                _ => ext4_image(tmp.path(), "work.ext4").unwrap(),
            };
            let dir = tmp.path().join("run");
            std::fs::create_dir(&dir).unwrap();
            (tmp, root, work, dir)
        }
    };
    let mut sim = spawn(&dir, Opts::default()).await;
    sim.configure("console=ttyS0 reboot=k", &root, &work).await;
    sim.fc.instance_start().await.unwrap();
    sim.wait_healthy().await;
    let pid = sim.proc.pid();
    // The guest's processes the simulator started (the agent, or what runs it), by their
    // parent: the simulator's guest thread.
    let agents: Vec<banger_procid::PidFd> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| banger_procid::PidFd::open(p.parse().ok()?).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!agents.is_empty(), "the agent runs");
    // A daemon started in the guest (a unique sleep, to be found by its arguments).
    let marker = format!("{}.{}", 3000 + mode as u32, std::process::id());
    let started = sim
        .agent()
        .exec_collect(&ExecRequest::new([
            "sh",
            "-c",
            &format!("sleep {marker} </dev/null >/dev/null 2>&1 &"),
        ]))
        .await
        .unwrap();
    assert_eq!(started.exit_code, Some(0), "{started:?}");
    let needle = format!("sleep {marker}");
    let mut daemons = Vec::new();
    wait_until("the guest's daemon to run", WAIT, || {
        daemons = processes_with(&needle);
        let found = !daemons.is_empty();
        async move { found }
    })
    .await;
    let images: Vec<PathBuf> = match mode {
        AgentMode::Host => Vec::new(),
        AgentMode::HostWithWorkDisk => vec![work.clone()],
        AgentMode::Image => vec![root.clone(), work.clone()],
    };
    for image in &images {
        assert!(
            !loops_of(image).is_empty(),
            "{} is loop-mounted",
            image.display()
        );
    }

    sim.proc.kill();

    let runtime_dir = PathBuf::from(format!("/tmp/banger-fcsim-{pid}"));
    let left = || {
        let mut left = Vec::new();
        if agents.iter().any(|a| !a.has_exited()) || !agents_of(pid).is_empty() {
            left.push("the agent".to_owned());
        }
        if daemons.iter().any(|d| !d.has_exited()) {
            left.push("the daemon started in the guest".to_owned());
        }
        if runtime_dir.exists() {
            left.push(format!("{}", runtime_dir.display()));
        }
        for image in &images {
            let loops = loops_of(image);
            if !loops.is_empty() {
                left.push(format!("loop device {loops}"));
            }
        }
        left
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !left().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left(),
        Vec::<String>::new(),
        "left behind by a SIGKILLed simulator"
    );
    drop(tmp);
}

#[tokio::test]
async fn a_sigkilled_simulator_leaves_nothing_with_the_hosts_agent() {
    a_sigkilled_simulator_leaves_nothing(AgentMode::Host).await;
}

#[tokio::test]
async fn a_sigkilled_simulator_leaves_nothing_with_the_hosts_agent_and_a_work_disk() {
    a_sigkilled_simulator_leaves_nothing(AgentMode::HostWithWorkDisk).await;
}

#[tokio::test]
async fn a_sigkilled_simulator_leaves_nothing_with_the_images_agent() {
    a_sigkilled_simulator_leaves_nothing(AgentMode::Image).await;
}
