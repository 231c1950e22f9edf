//! The security suite: an unprivileged local user against a running stack with a running VM.
//!
//! As root, the test starts a stack (`banger up --vmm sim` in a private network namespace, as
//! every e2e test does), creates a VM, and lists every door: every directory, file and socket
//! under the state and runtime directories (the hypervisor's API and vsock sockets among
//! them), the simulator's private guest directories and the agent's socket in them, and the
//! bus. Then, as an unprivileged user (`nobody`, or `banger-sec-test` created for the purpose
//! when there is no `nobody`; dropped to with `setpriv`, no groups), a probe
//! (`banger-sec-probe`) tries each door: list and read, create and open for writing, connect
//! and send a request, a NATS `CONNECT` without credentials. The test prints every attempt
//! and its result and fails at the first door that opened.
//!
//! The doors that must stay open are checked to be open: DNS answers the user's query (and
//! nothing more: a zone transfer and a dynamic update are refused), and the same user with the
//! bus credentials can use banger, because that goes over NATS, not files.
//!
//! Three checks change things on purpose, after the probe: the start-up repair (the test
//! leaves open directories and a 0644 log where an earlier version would have, before `up`,
//! and expects them closed and named in the controller's WARN), `banger doctor` (it must fail
//! its `permissions` check, naming the API socket, once the run directories are opened), and
//! the agent's own peer check (with its directory and socket opened, it still refuses the
//! user).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use banger_e2e::{Stack, text};
use banger_testkit::{have_program, require_root, skip};

/// The probe binary cargo built for this package.
const PROBE: &str = env!("CARGO_BIN_EXE_banger-sec-probe");

/// The user created when the host has no `nobody`.
const TEST_USER: &str = "banger-sec-test";

/// An unprivileged user: uid and gid.
#[derive(Debug, Clone, Copy)]
struct User {
    uid: u32,
    gid: u32,
}

/// `nobody`, else [`TEST_USER`] (created when missing).
fn unprivileged_user() -> User {
    let lookup = |name: &str| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| User {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
    };
    if let Some(u) = lookup("nobody").filter(|u| u.uid != 0) {
        return u;
    }
    if lookup(TEST_USER).is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_USER)
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd failed: {}", text(&out));
    }
    lookup(TEST_USER).unwrap()
}

/// A command that runs `program` as `user` (no supplementary groups) inside the stack's
/// namespace, with an environment of its own.
fn as_user(stack: &Stack, user: User, program: &Path) -> Command {
    let mut c = stack.ns.command("setpriv");
    c.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--clear-groups", "--"])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "error");
    c
}

/// Copies `bin` into `dir` (mode 0755), so the user can run it wherever the build lives.
fn install_for_user(bin: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.join(bin.file_name().unwrap());
    std::fs::copy(bin, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// The attempts for `root` and everything below it (listed as root): directories and files
/// are read and written, sockets connected to with the request their name says they serve.
fn doors_under(root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        out.push(("read".into(), root.to_owned()));
        out.push(("write".into(), root.to_owned()));
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .collect();
        entries.sort();
        for e in entries {
            doors_under(&e, out);
        }
    } else if kind.is_file() {
        out.push(("read".into(), root.to_owned()));
        out.push(("write".into(), root.to_owned()));
    } else if kind.is_socket() {
        let name = root.file_name().unwrap().to_string_lossy().into_owned();
        let action = if name == "api.sock" {
            "http"
        } else if name.starts_with("vsock.sock") {
            "vsock"
        } else {
            "agent"
        };
        out.push((action.into(), root.to_owned()));
    }
}

/// Pids of the simulator processes serving VMs of this stack (their `--api-sock` lies under
/// the stack's runtime dir).
fn simulator_pids(run_dir: &Path) -> Vec<u32> {
    let needle = run_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.first().is_some_and(|a| a.ends_with("banger-fcsim"))
                    && args
                        .windows(2)
                        .any(|w| w[0] == "--api-sock" && w[1].starts_with(&needle))
            })
        })
        .collect()
}

#[test]
fn an_unprivileged_user_finds_every_door_closed() {
    if !require_root() {
        return;
    }
    for program in ["setpriv", "dig", "nsupdate", "mkfs.ext4"] {
        if !have_program(program) {
            skip(&format!("{program} is not installed (./scripts/setup)"));
            return;
        }
    }
    let user = unprivileged_user();
    let stack = Stack::new("sec");
    // What an earlier version left: open directories and files in the controller's trees.
    let old_log = stack.dir.join("state/vm-controller/vms/old/serial.log");
    let old_run = stack.dir.join("run/vm-controller/old");
    std::fs::create_dir_all(old_log.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&old_run).unwrap();
    std::fs::write(&old_log, "guest output\n").unwrap();
    let open = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    for d in [
        "state",
        "state/vm-controller",
        "state/vm-controller/vms",
        "run",
    ] {
        open(&stack.dir.join(d), 0o755);
    }
    open(old_log.parent().unwrap(), 0o755);
    open(&old_log, 0o644);
    open(old_run.parent().unwrap(), 0o755);
    open(&old_run, 0o777);
    stack.up();
    // Repaired at start-up, and the controller said what it repaired.
    let controller_log =
        std::fs::read_to_string(stack.dir.join("state/logs/vm-controller.log")).unwrap();
    for p in [&old_log, &old_run] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} was not repaired: {mode:o}",
            p.display()
        );
        assert!(
            controller_log.lines().any(|l| l.contains("WARN")
                && l.contains("repaired permissions")
                && l.contains(&p.display().to_string())),
            "vm-controller did not say it repaired {}:\n{controller_log}",
            p.display()
        );
    }
    stack.register_image("demo");
    stack.banger_ok(&["vm", "create", "probe", "--image", "demo", "--wait"]);
    // Root still uses the guest through the agent.
    let id = stack.banger_ok(&["vm", "exec", "probe", "--", "id", "-u"]);
    assert_eq!(id.trim(), "0", "vm exec as root runs as root in the guest");

    // Every door, listed as root.
    let state = stack.dir.join("state");
    let run = stack.dir.join("run");
    let mut doors = Vec::new();
    doors_under(&state, &mut doors);
    doors_under(&run, &mut doors);
    let sims = simulator_pids(&run);
    assert!(!sims.is_empty(), "no simulator process serves the VM");
    for pid in sims {
        // The simulator's private guest directory: the agent's socket is in it.
        doors_under(
            &std::env::temp_dir().join(format!("banger-fcsim-{pid}")),
            &mut doors,
        );
    }
    let count = |action: &str| doors.iter().filter(|(a, _)| a == action).count();
    // The suite proves nothing if the doors it means to try are not there.
    assert!(count("http") >= 1, "no hypervisor API socket found");
    assert!(count("vsock") >= 1, "no vsock socket found");
    assert!(count("agent") >= 1, "no agent socket found");
    assert!(
        doors
            .iter()
            .any(|(_, p)| p.ends_with("vm-controller/vms.sqlite")),
        "the controller's database was not found"
    );
    doors.push(("nats".into(), format!("127.0.0.1:{}", stack.port).into()));

    // Try them all as the unprivileged user.
    let probe = install_for_user(Path::new(PROBE), &stack.dir.join("user-bin"));
    let mut child = as_user(&stack, user, &probe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (action, target) in &doors {
            writeln!(stdin, "{action} {}", target.display()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the probe failed: {}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    println!(
        "{} attempts as uid {} (gid {}, no groups):",
        lines.len(),
        user.uid,
        user.gid
    );
    for line in &lines {
        println!("  {line}");
        assert!(!line.contains(": OPEN ("), "an open door: {line}");
    }
    assert_eq!(
        lines.len(),
        doors.len(),
        "every attempt reports a result: {}",
        text(&out)
    );

    // The agent's own lock: even with its directory and socket opened (as an earlier version
    // left them), it serves no other user.
    let agent_sockets: Vec<PathBuf> = doors
        .iter()
        .filter(|(a, _)| a == "agent")
        .map(|(_, p)| p.clone())
        .collect();
    for sock in &agent_sockets {
        let dir = sock.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut child = as_user(&stack, user, &probe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for sock in &agent_sockets {
            writeln!(stdin, "agent {}", sock.display()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), agent_sockets.len(), "{}", text(&out));
    for line in &lines {
        println!("  (socket and directory opened on purpose) {line}");
        assert!(
            line.contains(": refused (connected, but closed unanswered"),
            "the agent served another user: {line}"
        );
    }

    // `banger doctor` sees what the probe saw, and sees a door opened.
    let permissions = || {
        let out = stack.banger(&["doctor", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&out)));
        let c = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "permissions")
            .unwrap_or_else(|| panic!("no permissions check: {report}"))
            .clone();
        (
            c["level"].as_str().unwrap().to_owned(),
            c["detail"].as_str().unwrap().to_owned(),
        )
    };
    let (level, detail) = permissions();
    println!("  doctor permissions: {level}: {detail}");
    assert_eq!(level, "ok", "{detail}");
    let api_sock = doors
        .iter()
        .find(|(a, _)| a == "http")
        .map(|(_, p)| p.clone())
        .unwrap();
    let mut dir = api_sock.parent().unwrap();
    let mut reopened = Vec::new();
    while dir.starts_with(&run) {
        open(dir, 0o755);
        reopened.push(dir.to_owned());
        dir = dir.parent().unwrap();
    }
    let (level, detail) = permissions();
    println!("  doctor permissions, run dirs opened on purpose: {level}: {detail}");
    assert_eq!(level, "fail", "{detail}");
    assert!(
        detail.contains(&format!("socket {}", api_sock.display())),
        "doctor does not name the reachable API socket: {detail}"
    );
    for d in reopened {
        open(&d, 0o700);
    }

    // DNS is open to everyone on purpose: it answers a query, and nothing more.
    let ip = {
        let v: serde_json::Value =
            serde_json::from_str(&stack.banger_ok(&["--json", "vm", "list"])).unwrap();
        let vms = v["vms"]
            .as_array()
            .or_else(|| v.as_array())
            .unwrap()
            .clone();
        vms.iter()
            .find(|v| v["name"] == "probe")
            .and_then(|v| v["network"]["ip"].as_str().map(str::to_owned))
            .unwrap()
    };
    let dig = |args: &[&str]| {
        let out = as_user(&stack, user, Path::new("/usr/bin/dig"))
            .args(["@127.0.0.1", "-p", "42069", "+tries=1", "+time=2"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let answer = dig(&["+short", "probe.vm", "A"]);
    println!("  dns probe.vm A: {answer} (open on purpose)");
    assert_eq!(answer, ip, "DNS answers the unprivileged user's query");
    let transfer = dig(&["vm", "AXFR"]);
    println!("  dns AXFR vm: {}", transfer.replace('\n', " "));
    assert!(
        !transfer.contains(&ip),
        "a zone transfer handed the zone to the unprivileged user: {transfer}"
    );
    // A dynamic update (RFC 2136) must not add a name.
    let mut nsupdate = as_user(&stack, user, Path::new("/usr/bin/nsupdate"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nsupdate
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"server 127.0.0.1 42069\nzone vm\nupdate add intruder.vm 60 A 192.0.2.66\nsend\n",
        )
        .unwrap();
    let update = nsupdate.wait_with_output().unwrap();
    println!(
        "  dns UPDATE intruder.vm: exit {:?}: {}",
        update.status.code(),
        text(&update).trim().replace('\n', " ")
    );
    assert!(
        !update.status.success(),
        "a dynamic update was accepted: {}",
        text(&update)
    );
    assert_eq!(
        dig(&["+short", "intruder.vm", "A"]),
        "",
        "a dynamic update added a name"
    );

    // The bus is a door with a lock: without credentials the CLI is refused, with them it
    // works, as the unprivileged user, because that goes over NATS and not through any file.
    let cli = install_for_user(
        &banger_testkit::bin_path("banger"),
        &stack.dir.join("user-bin"),
    );
    let banger_as_user = |creds: Option<(&str, &str)>| {
        let mut c = as_user(&stack, user, &cli);
        c.args(["--nats-url", &format!("nats://127.0.0.1:{}", stack.port)])
            .args(["--host-id", &stack.host, "--json", "vm", "list"]);
        if let Some((u, p)) = creds {
            c.env("BANGER_NATS_USER", u).env("BANGER_NATS_PASSWORD", p);
        }
        c.output().unwrap()
    };
    let refused = banger_as_user(None);
    println!(
        "  banger vm list without credentials: exit {:?}",
        refused.status.code()
    );
    assert!(
        !refused.status.success(),
        "the bus let a user without credentials in: {}",
        text(&refused)
    );
    // And the user is told why, not sent to start a stack that runs.
    assert!(
        text(&refused).contains("refused these credentials"),
        "a refused user is not told the credentials were refused: {}",
        text(&refused)
    );
    let stack_file: toml::Table = std::fs::read_to_string(state.join("stack.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let nats = &stack_file["nats"];
    let (u, p) = (
        nats["user"].as_str().unwrap(),
        nats["password"].as_str().unwrap(),
    );
    let allowed = banger_as_user(Some((u, p)));
    println!(
        "  banger vm list with the bus credentials: exit {:?} (open on purpose)",
        allowed.status.code()
    );
    assert!(
        allowed.status.success() && String::from_utf8_lossy(&allowed.stdout).contains("probe"),
        "a bus user with credentials cannot use banger: {}",
        text(&allowed)
    );
}
