//! compose.yaml works, for real, and cannot rot.
//!
//! - `every_compose_command_names_a_shipped_binary_and_flags_it_accepts` (no Docker needed):
//!   every command and health check names a binary the image ships (`scripts/docker-rootfs`
//!   copies it) and flags that binary accepts (each is run with `--help` appended, which clap
//!   only reaches after every earlier flag parsed).
//! - `compose_boots_a_vm_and_down_leaves_nothing` (root; installs Debian's docker.io and
//!   docker-compose when missing): a private dockerd in a private network namespace builds the
//!   image (no registry: `FROM scratch`), `up -d --build` brings every service to healthy,
//!   an unauthenticated bus client is refused, then through `compose exec` an image is
//!   registered and a VM created; the host resolves its name with dig, pings it, and runs a
//!   command in it; `down -v` leaves no tap, bridge, nftables table, iptables rule, loop
//!   device, process or volume.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use banger_e2e::docker::{self, Compose, PrivateDocker};
use banger_e2e::text;
use banger_testkit::netns::NetNs;
use banger_testkit::{bin_path, require_root, skip};

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn argv(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Checks one command line from compose.yaml; returns the binary it runs. `rootfs_script` is
/// scripts/docker-rootfs, which decides what the image holds.
fn check_command(service: &str, argv: &[String], rootfs_script: &str) -> String {
    let (bin, args) = argv.split_first().unwrap();
    // compose interpolates `${VAR:-default}`; the default is what runs unless the user sets it.
    let args: Vec<String> = args
        .iter()
        .map(
            |a| match a.strip_prefix("${").and_then(|a| a.strip_suffix('}')) {
                Some(v) => v.split_once(":-").map_or("", |(_, d)| d).to_owned(),
                None => a.clone(),
            },
        )
        .collect();
    let tools = rootfs_script
        .lines()
        .find(|l| l.starts_with("TOOLS=("))
        .expect("scripts/docker-rootfs lists its TOOLS");
    if bin == "nats-server" {
        assert!(
            tools.contains("nats-server"),
            "the image does not ship nats-server"
        );
        let help = Command::new("nats-server").arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout).into_owned()
            + &String::from_utf8_lossy(&help.stderr);
        for flag in args.iter().filter(|a| a.starts_with('-')) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag},")),
                "{service}: nats-server has no flag {flag}"
            );
        }
        return bin.clone();
    }
    let bins = rootfs_script
        .split("BANGER_BINS=(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("scripts/docker-rootfs lists its BANGER_BINS");
    assert!(
        bins.split_whitespace().any(|b| b == bin),
        "{service}: scripts/docker-rootfs does not put {bin} in the image"
    );
    let out = Command::new(bin_path(bin))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{service}: `{} --help` was refused:\n{}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    bin.clone()
}

#[test]
fn every_compose_command_names_a_shipped_binary_and_flags_it_accepts() {
    let rootfs_script = repo_file("scripts/docker-rootfs");
    assert!(
        repo_file("Dockerfile").contains("COPY target/docker-rootfs/ /"),
        "the Dockerfile must build the image from scripts/docker-rootfs's output"
    );
    let mut compose: serde_yaml::Value = serde_yaml::from_str(&repo_file("compose.yaml")).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let mut ran = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        ran.push(check_command(name, &argv(&svc["command"]), &rootfs_script));
        if name == "init" {
            // The one-shot that writes the credentials: no health check, it exits.
            assert_eq!(svc["restart"].as_str(), Some("no"), "init must not restart");
            continue;
        }
        let test = argv(&svc["healthcheck"]["test"]);
        assert_eq!(test[0], "CMD", "{name}: health check must be an exec form");
        check_command(name, &test[1..], &rootfs_script);
    }
    ran.sort();
    assert_eq!(
        ran,
        [
            "banger",
            "banger-dnsd",
            "banger-netd",
            "banger-stord",
            "banger-vm-controller",
            "nats-server"
        ],
        "compose.yaml must run banger init, nats-server and every service"
    );
}

/// The services with a health check; each must become healthy.
const HEALTHY: [&str; 5] = ["nats", "netd", "stord", "vm-controller", "dnsd"];

/// How long the stack may take to become healthy after `up` returns.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

/// The stack of one test: its namespace, its private Docker, its compose project; `down -v`
/// on drop (also after a failure), then the daemons stop and their files go.
struct ComposeStack {
    compose: Compose,
    project: String,
    file: PathBuf,
    // Dropped in this order: the daemons, the test's files, then the namespace.
    docker: PrivateDocker,
    _dir: RemoveDir,
    ns: NetNs,
    down: bool,
}

/// Removes a directory on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ComposeStack {
    fn run(&self, args: &[&str]) -> Output {
        self.compose
            .command(&self.docker, &self.project, &self.file)
            .args(args)
            .output()
            .unwrap()
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {} failed:\n{}",
            self.compose.flavour,
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `banger ARGS` inside the vm-controller container, as a user would run it.
    fn banger(&self, args: &[&str]) -> String {
        let mut argv = vec!["exec", "-T", "vm-controller", "banger"];
        argv.extend_from_slice(args);
        self.run_ok(&argv)
    }

    fn container(&self, service: &str) -> String {
        self.run_ok(&["ps", "-q", service]).trim().to_owned()
    }

    fn health(&self, service: &str) -> String {
        let id = self.container(service);
        let out = self
            .docker
            .docker()
            .args(["inspect", "--format", "{{.State.Health.Status}}", &id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn volume_dir(&self, volume: &str) -> PathBuf {
        let out = self
            .docker
            .docker()
            .args(["volume", "inspect", "--format", "{{.Mountpoint}}"])
            .arg(format!("{}_{volume}", self.project))
            .output()
            .unwrap();
        assert!(out.status.success(), "volume {volume}: {}", text(&out));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    fn logs(&self) -> String {
        text(&self.run(&["logs", "--no-color", "--tail", "40"]))
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        if !self.down {
            eprintln!("{}", self.logs());
            let _ = self.run(&["down", "-v", "--timeout", "60"]);
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loop devices whose backing file lies under `root`.
fn loop_devices_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let backing =
                        std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
                    backing.starts_with(root.as_str()).then(|| {
                        format!("{} ({})", e.file_name().to_string_lossy(), backing.trim())
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the processes in network namespace `ns` other than Docker's own daemons.
fn processes_in(ns: &NetNs) -> Vec<String> {
    let Ok(want) = std::fs::metadata(format!("/var/run/netns/{}", ns.name())) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let same = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev());
        if !same {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if !matches!(comm, "dockerd" | "containerd" | "nsenter") {
            found.push(format!("{pid} {comm}"));
        }
    }
    found
}

/// `banger doctor`'s forward-policy check, run on the host (the test's namespace): its level
/// and detail.
fn forward_policy(ns: &NetNs, no_config: &Path) -> (String, String) {
    let out = ns
        .command(bin_path("banger").to_str().unwrap())
        .arg("--config")
        .arg(no_config)
        .args(["--nats-url", "nats://127.0.0.1:1", "--json", "doctor"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", text(&out)));
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "forward-policy")
        .unwrap_or_else(|| panic!("no forward-policy check in {report}"))
        .clone();
    (
        check["level"].as_str().unwrap().to_owned(),
        check["detail"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn compose_boots_a_vm_and_down_leaves_nothing() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    if let Err(why) = docker::install_packages() {
        skip(&format!("Docker cannot be installed here: {why}"));
        return;
    }
    let compose = match Compose::find() {
        Ok(c) => c,
        Err(why) => {
            skip(&why);
            return;
        }
    };
    let ns = NetNs::create("cmp");
    // A new namespace inherits the host's IPv4 forwarding switch, which earlier tests (or the
    // host's own set-up) may have turned on. Docker sets the FORWARD policy to DROP only when it
    // turns forwarding on itself, as on a fresh Debian host; start from there, so the test
    // covers the case that matters whatever ran before it.
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]);
    let dir = std::env::temp_dir().join(format!("banger-compose-{}", ns.name()));
    let docker = match PrivateDocker::start(&ns, &dir.join("docker")) {
        Ok(d) => d,
        Err(why) => {
            skip(&format!("Docker cannot run here: {why}"));
            return;
        }
    };
    eprintln!("[{:?}] private dockerd up", started.elapsed());
    let forward = ns.exec(&["iptables", "-S", "FORWARD"]);
    assert!(
        forward.contains("-P FORWARD DROP"),
        "dockerd turned forwarding on, so it should have set the FORWARD policy to DROP:\n{forward}"
    );

    // The image's root filesystem, from the binaries this test run built.
    let bin_dir = bin_path("banger").parent().unwrap().to_owned();
    let rootfs = Command::new(repo().join("scripts/docker-rootfs"))
        .arg(&bin_dir)
        .output()
        .unwrap();
    assert!(
        rootfs.status.success(),
        "scripts/docker-rootfs: {}",
        text(&rootfs)
    );

    let mut stack = ComposeStack {
        compose,
        project: format!("bct{}", std::process::id()),
        file: repo().join("compose.yaml"),
        docker,
        _dir: RemoveDir(dir.clone()),
        ns,
        down: false,
    };
    stack.run_ok(&["up", "-d", "--build"]);
    eprintln!(
        "[{:?}] {} up -d --build returned",
        started.elapsed(),
        stack.compose.flavour
    );
    let end = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let waiting: Vec<(&str, String)> = HEALTHY
            .iter()
            .map(|s| (*s, stack.health(s)))
            .filter(|(_, h)| h != "healthy")
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "not healthy within {HEALTH_TIMEOUT:?}: {waiting:?}\n{}",
            stack.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("[{:?}] every service healthy", started.elapsed());

    // The bus demands the credentials `banger init` generated, and they are root's only.
    let state = stack.volume_dir("state");
    for f in ["stack.toml", "nats/nats.conf"] {
        let meta = std::fs::metadata(state.join(f)).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o600,
            "{f} must be readable by root only"
        );
        assert_eq!(meta.uid(), 0, "{f} must belong to root");
    }
    let empty = dir.join("no-credentials.toml");
    std::fs::write(&empty, "").unwrap();
    let anonymous = stack
        .ns
        .command(bin_path("banger").to_str().unwrap())
        .arg("--config")
        .arg(&empty)
        .args(["--nats-url", "nats://127.0.0.1:4222", "ping"])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "a client without credentials was let onto the bus:\n{}",
        text(&anonymous)
    );
    assert!(
        text(&anonymous).to_lowercase().contains("authorization"),
        "the refusal should name the missing authorization:\n{}",
        text(&anonymous)
    );

    // Register an image: stand-in kernel and a real ext4 root, copied into the stord container.
    let files = dir.join("image");
    std::fs::create_dir_all(&files).unwrap();
    let (kernel, rootfs) = banger_e2e::stand_in_image_files(&files);
    let stord = stack.container("stord");
    let copied = stack
        .docker
        .docker()
        .arg("cp")
        .arg(format!("{}/.", files.display()))
        .arg(format!("{stord}:/var/lib/banger/import/"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "docker cp: {}", text(&copied));
    let in_container = |p: &Path| {
        format!(
            "/var/lib/banger/import/{}",
            p.file_name().unwrap().to_string_lossy()
        )
    };
    stack.banger(&[
        "image",
        "register",
        "plain",
        "--kernel",
        &in_container(&kernel),
        "--rootfs",
        &in_container(&rootfs),
    ]);

    let created = stack.banger(&["vm", "create", "web", "--image", "plain", "--wait"]);
    eprintln!("[{:?}] {}", started.elapsed(), created.trim());
    let show: serde_json::Value =
        serde_json::from_str(&stack.banger(&["--json", "vm", "show", "web"])).unwrap();
    let ip = show["network"]["ip"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("172.16.0."), "{show}");

    // From the host (the test's namespace): the name resolves, the guest answers, and a
    // command runs in it.
    let dig = stack.ns.exec(&[
        "dig",
        "+short",
        "+time=2",
        "@127.0.0.1",
        "-p",
        "42069",
        "web.vm",
    ]);
    assert_eq!(dig.trim(), ip, "dig web.vm");
    stack.ns.exec(&["ping", "-c", "1", "-W", "2", &ip]);
    let hostname = stack.banger(&["vm", "exec", "web", "--", "uname", "-n"]);
    assert_eq!(
        hostname.trim(),
        "web",
        "the command ran in the guest (its hostname)"
    );
    assert!(
        stack.ns.exec(&["ip", "-o", "link", "show"]).contains("bgr"),
        "the VM's tap is in the test's namespace"
    );
    // Docker's FORWARD policy drops in this namespace; netd's accepts keep the VM reachable
    // and doctor says so.
    let (level, detail) = forward_policy(&stack.ns, &empty);
    assert_eq!(level, "ok", "{detail}");
    assert!(
        detail.contains("DROP") && detail.contains("DOCKER-USER"),
        "{detail}"
    );

    // Down: nothing is left.
    let down_start = Instant::now();
    stack.run_ok(&["down", "-v", "--timeout", "60"]);
    stack.down = true;
    eprintln!(
        "[{:?}] down -v took {:?}",
        started.elapsed(),
        down_start.elapsed()
    );
    let links = stack.ns.exec(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("bgr"), "a tap was left:\n{links}");
    assert!(!links.contains("banger0"), "the bridge was left:\n{links}");
    assert!(
        !stack.ns.try_exec(&["nft", "list", "table", "ip", "banger"]),
        "netd's nftables table was left"
    );
    let iptables = stack.ns.exec(&["iptables", "-S"]);
    assert!(
        !iptables.contains("banger:"),
        "netd's iptables rules were left:\n{iptables}"
    );
    // With netd gone, doctor names the conflict that remains (Docker's policy).
    let (level, detail) = forward_policy(&stack.ns, &empty);
    assert_eq!(level, "warn", "{detail}");
    assert!(
        detail.contains("Docker") && detail.contains("missing"),
        "{detail}"
    );
    let loops = loop_devices_under(&stack.docker.data_root());
    assert!(loops.is_empty(), "loop devices were left: {loops:?}");
    let procs = processes_in(&stack.ns);
    assert!(procs.is_empty(), "processes were left: {procs:?}");
    let volumes = stack
        .docker
        .docker()
        .args(["volume", "ls", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&volumes.stdout).trim(),
        "",
        "volumes were left"
    );
    let containers = stack
        .docker
        .docker()
        .args(["ps", "--all", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&containers.stdout).trim(),
        "",
        "containers were left"
    );
    eprintln!("[{:?}] compose test done", started.elapsed());
}
