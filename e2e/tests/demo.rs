//! The README's main command, exactly as a new user runs it: `./scripts/demo`, unchanged, then
//! the commands the README prints after it, read from README.md's code block (so this test
//! breaks when the README and the tools drift apart), then `banger down` — and nothing is
//! left.
//!
//! The demo runs with its own state and runtime directories (`BANGER_STATE_DIR`,
//! `BANGER_RUNTIME_DIR`) inside a private network namespace, so its default bridge `banger0`,
//! its NATS port 4222 and DNS port 42069 never meet another test's or the host's. It runs
//! `scripts/setup` as the demo does: fast when the packages are installed and the workspace is
//! built (it calls apt only for a missing package).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_e2e::{alive, kill_processes_mentioning, processes_mentioning, text};
use banger_testkit::netns::NetNs;
use banger_testkit::{require_root, wait_until_blocking};

/// How long the README's live `banger events` may take to subscribe, and to show the demo VM
/// stopping once `banger down` ran.
const EVENTS_WAIT: Duration = Duration::from_secs(30);

/// The repository root: where the README's relative commands (`target/debug/banger`) run.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// The demo's world: a namespace and directories of its own; on drop (also after a failure)
/// its stack is stopped, anything left running is killed and the files are removed.
struct DemoEnv {
    ns: NetNs,
    dir: PathBuf,
}

impl DemoEnv {
    fn new() -> Self {
        let ns = NetNs::create("demo");
        let dir = std::env::temp_dir().join(format!("banger-e2e-{}", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { ns, dir }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `bash -c LINE` in the namespace, from the repository root, in a user's environment
    /// plus the demo's directories. Nothing of what cargo gives a test (`CARGO_*`,
    /// `LD_LIBRARY_PATH`, ...) reaches it: that would make the demo's `cargo build` rebuild
    /// what is built, and a user does not have it either.
    fn shell(&self, line: &str) -> Command {
        let mut c = self.ns.command("bash");
        c.arg("-c").arg(line).current_dir(repo()).env_clear();
        for key in [
            "PATH",
            "HOME",
            "USER",
            "LOGNAME",
            "LANG",
            "TERM",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
        ] {
            if let Some(v) = std::env::var_os(key) {
                c.env(key, v);
            }
        }
        c.env("BANGER_STATE_DIR", self.state_dir())
            .env("BANGER_RUNTIME_DIR", self.runtime_dir())
            .env("NO_COLOR", "1");
        c
    }

    fn run(&self, line: &str) -> Output {
        self.shell(line).output().unwrap()
    }

    fn run_ok(&self, line: &str) -> String {
        let out = self.run(line);
        assert!(
            out.status.success(),
            "`{line}` failed ({:?}):\n{}",
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for DemoEnv {
    fn drop(&mut self) {
        let _ = self.run("target/debug/banger down");
        kill_processes_mentioning(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The commands of the README's code block that follows "Afterwards", comments kept (bash
/// ignores them).
fn readme_afterwards_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let after = readme
        .find("Afterwards the")
        .expect("the README's \"Afterwards the stack and the VM keep running\" paragraph");
    let rest = &readme[after..];
    let start = rest.find("```sh\n").expect("a code block after it") + "```sh\n".len();
    let end = rest[start..].find("```").expect("the code block's end") + start;
    rest[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The commands the demo printed after "Try:" (two-space indented lines).
fn demo_suggestions(out: &str) -> Vec<String> {
    let Some(at) = out.find("Try:\n") else {
        return Vec::new();
    };
    out[at..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The lines of the demo's output section that starts with `==> <title>`.
fn section<'a>(out: &'a str, title: &str) -> Vec<&'a str> {
    let head = format!("==> {title}");
    out.lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| !l.starts_with("==> "))
        .collect()
}

/// A process and when it started (the start time tells a reused pid apart).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Every process in the namespace and all their descendants (the simulated guests' agents run
/// in network namespaces of their own, as children of their simulator).
fn stack_processes(ns: &NetNs) -> Vec<(i32, u64)> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns.name()])
        .output()
        .unwrap();
    let mut found: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found
        .into_iter()
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect()
}

/// `banger events`, live, in the background: its stdout gathered, its "watching" line awaited.
struct Watcher {
    child: Child,
    stdout: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(env: &DemoEnv, line: &str) -> Self {
        let mut child = env
            .shell(line)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        for (pipe, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                Arc::clone(&stdout),
            ),
            (Box::new(child.stderr.take().unwrap()), Arc::clone(&stderr)),
        ] {
            std::thread::spawn(move || {
                for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                }
            });
        }
        wait_until_blocking("`banger events` to subscribe", EVENTS_WAIT, || {
            stderr.lock().unwrap().contains("watching ")
        });
        Self { child, stdout }
    }

    fn seen(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_readmes_demo_runs_as_written_and_down_leaves_nothing() {
    if !require_root() {
        return;
    }
    let env = DemoEnv::new();

    // The README's main command, unchanged.
    let demo = env.run("./scripts/demo");
    let out = text(&demo);
    assert!(demo.status.success(), "./scripts/demo failed:\n{out}");

    // What it shows: the guest's uname, the VM's name resolved to its address, the ping.
    let ip = {
        let show = env.run_ok("target/debug/banger --json vm show demo");
        let v: serde_json::Value = serde_json::from_str(&show).unwrap();
        let v = v.get("vm").unwrap_or(&v);
        assert_eq!(v["state"], "running", "{show}");
        v["network"]["ip"].as_str().unwrap().to_owned()
    };
    let uname = section(&out, "banger vm exec demo -- uname -a");
    assert!(
        uname.iter().any(|l| l.starts_with("Linux demo ")),
        "the demo did not show the guest's uname:\n{out}"
    );
    assert_eq!(
        section(&out, "dig @127.0.0.1 -p 42069 +short demo.vm")
            .iter()
            .find(|l| !l.is_empty()),
        Some(&ip.as_str()),
        "the demo's dig answer is not the VM's address:\n{out}"
    );
    let ping = section(&out, &format!("ping -c 1 {ip}")).join("\n");
    assert!(
        ping.contains("1 packets transmitted, 1 received"),
        "the demo's ping failed:\n{out}"
    );
    // `uname` was the image's own busybox, not the host's coreutils.
    let exe = env.run_ok("target/debug/banger vm exec demo -- readlink /proc/self/exe");
    assert_eq!(exe.trim(), "/bin/busybox", "not the image's busybox");
    let os = env.run_ok("target/debug/banger vm exec demo -- cat /etc/os-release");
    assert!(os.contains("banger demo"), "not the demo image: {os}");

    // The commands the demo suggests, as printed (the events one is the README's too).
    let suggestions = demo_suggestions(&out);
    let hello = suggestions
        .iter()
        .find(|l| l.contains("echo hello > /root/hello"))
        .unwrap_or_else(|| panic!("the demo no longer suggests writing /root/hello:\n{out}"));
    env.run_ok(hello);
    assert_eq!(
        env.run_ok("target/debug/banger vm exec demo -- cat /root/hello")
            .trim(),
        "hello"
    );

    // The README's "afterwards" commands, exactly as written, in order.
    let commands = readme_afterwards_commands();
    assert!(
        commands.iter().any(|c| c.contains("banger down")),
        "the README's afterwards block lost `banger down`: {commands:?}"
    );
    let before_down = stack_processes(&env.ns);
    assert!(
        before_down.len() >= 6,
        "the stack's processes were not found: {before_down:?}"
    );
    let mut watcher = None;
    for line in &commands {
        let words: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        match words.get(1..).unwrap_or_default() {
            ["vm", "list"] => {
                let o = env.run_ok(line);
                assert!(
                    o.lines()
                        .any(|l| l.starts_with("demo ") && l.contains("running")),
                    "`{line}`:\n{o}"
                );
            }
            ["vm", "exec", "demo", "--", "uname", "-a"] => {
                let o = env.run_ok(line);
                assert!(o.starts_with("Linux demo "), "`{line}`:\n{o}");
            }
            ["status"] => {
                let o = env.run_ok(line);
                assert!(o.contains("VMs      1 running"), "`{line}`:\n{o}");
            }
            // Live: runs beside the rest, and must show what `down` does to the VM.
            ["events"] => watcher = Some(Watcher::start(&env, line)),
            ["down"] => {
                let o = env.run(line);
                assert!(o.status.success(), "`{line}` failed:\n{}", text(&o));
            }
            other => panic!("no check for the README's command {other:?} ({line}): add one"),
        }
    }
    let watcher = watcher.expect("the README's afterwards block lost `banger events`");
    wait_until_blocking("`banger events` to show demo stopped", EVENTS_WAIT, || {
        watcher
            .seen()
            .lines()
            .any(|l| l.contains("demo") && l.contains("stopped"))
    });
    drop(watcher);

    // Nothing left: no tap or bridge, no nftables table, no loop device, no process.
    let links = env.ns.exec(&["ip", "-o", "link", "show"]);
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "links left after down:\n{links}");
    let tables = env.ns.exec(&["nft", "list", "tables"]);
    assert!(tables.trim().is_empty(), "nftables tables left: {tables}");
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let dir = env.dir.to_string_lossy().into_owned();
    let held: Vec<String> = String::from_utf8_lossy(&loops.stdout)
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_owned)
        .collect();
    assert!(held.is_empty(), "loop devices left: {held:?}");
    let left: Vec<i32> = before_down
        .iter()
        .filter(|(pid, started)| alive(*pid) && start_time(*pid) == Some(*started))
        .map(|(pid, _)| *pid)
        .collect();
    assert!(left.is_empty(), "processes of the stack left: {left:?}");
    let mentioning = processes_mentioning(&env.dir);
    assert!(mentioning.is_empty(), "processes left: {mentioning:#?}");
}
