//! Fixtures for the end-to-end tests: a whole banger stack (`banger up --vmm sim`) inside a
//! private network namespace, driven through the real `banger` binary as a user would.
//!
//! Each [`Stack`] has its own namespace, state and runtime directories, NATS port, bridge
//! and subnet, so stacks of parallel tests never meet, and the host's network is never
//! touched. Dropping a stack runs `banger down` and removes its files, even after a failure.
//!
//! `src/bin/banger-sec-probe.rs` is the security suite's probe (`tests/security.rs`): run as an
//! unprivileged user, it tries the doors it is given and reports which opened.

pub mod docker;
pub mod documented_lab;
pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU8, Ordering};

use banger_procid::{PidFd, ProcessId};
use banger_proto::event::{EventKind, VmEvent};
use banger_testkit::netns::NetNs;
use banger_testkit::{bin_path, free_port};

/// Distinct third octets for the VM subnets of stacks in one test process.
static NEXT_SUBNET: AtomicU8 = AtomicU8::new(0);

/// A banger stack in a private network namespace.
pub struct Stack {
    /// The namespace every process of the stack runs in.
    pub ns: NetNs,
    /// Root of the stack's files (`state/`, `run/`).
    pub dir: PathBuf,
    /// Port of the stack's nats-server (inside the namespace).
    pub port: u16,
    /// Host id of the stack.
    pub host: String,
    env: Vec<(String, String)>,
}

impl Stack {
    /// A new, not yet started, stack. `tag` (a few letters) names the namespace.
    ///
    /// # Panics
    /// When the namespace or the directories cannot be created.
    #[allow(
        clippy::unwrap_used,
        reason = "a fixture that cannot be built fails the test"
    )]
    pub fn new(tag: &str) -> Self {
        let ns = NetNs::create(tag);
        // Loopback carries the bus and DNS inside the namespace.
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(format!("banger-e2e-{}", ns.name()));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let octet = 100 + NEXT_SUBNET.fetch_add(1, Ordering::Relaxed) % 100;
        // A bridge and subnet of its own: the namespace is private, but a unique name keeps
        // the kernel's view readable when a test fails.
        let config = format!(
            "[netd]\nbridge = \"bgt{octet}\"\nsubnet = \"10.{octet}.0.0/24\"\n\n\
             [dnsd]\nlisten = [\"127.0.0.1:42069\"]\n"
        );
        std::fs::write(dir.join("banger.toml"), config).unwrap();
        Self {
            ns,
            dir,
            port: free_port(),
            host: format!("e2e{octet}"),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every command run after this (and so for the
    /// services `banger up` starts).
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// A `banger` command with the stack's global flags, ready for arguments.
    ///
    /// # Panics
    /// When the binary path is not UTF-8.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn command(&self) -> Command {
        let mut cmd = self.ns.command(bin_path("banger").to_str().unwrap());
        cmd.arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--runtime-dir")
            .arg(self.dir.join("run"))
            .args(["--nats-url", &format!("nats://127.0.0.1:{}", self.port)])
            .args(["--host-id", &self.host])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `banger ARGS` and returns what it did.
    ///
    /// # Panics
    /// When the binary cannot be run at all.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn banger(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `banger ARGS`, asserts it succeeded and returns its stdout.
    ///
    /// # Panics
    /// When the command fails (the panic shows its output).
    pub fn banger_ok(&self, args: &[&str]) -> String {
        let out = self.banger(args);
        assert!(
            out.status.success(),
            "banger {} failed ({:?}):\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `banger up --vmm sim` with the stack's config (own bridge, subnet, DNS listener),
    /// asserting it worked. `up` carries that config into the stack file every later command
    /// and service reads.
    ///
    /// # Panics
    /// When `up` fails.
    pub fn up(&self) {
        let config = self.dir.join("banger.toml");
        let config = config.to_string_lossy();
        self.banger_ok(&["--config", &config, "up", "--vmm", "sim"]);
    }

    /// Registers image `name`: a stand-in kernel file (the simulator boots no kernel, but stord
    /// and Firecracker's API both require a readable file) and a small real ext4 root
    /// filesystem, made under the stack's directory.
    ///
    /// # Panics
    /// When the files cannot be made or `banger image register` fails.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn register_image(&self, name: &str) {
        let dir = self.dir.join("image").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (kernel, rootfs) = stand_in_image_files(&dir);
        self.banger_ok(&[
            "image",
            "register",
            name,
            "--kernel",
            kernel.to_str().unwrap(),
            "--rootfs",
            rootfs.to_str().unwrap(),
        ]);
    }

    /// The VM taps (`bgr*`) in the stack's namespace.
    pub fn taps(&self) -> Vec<String> {
        self.ns
            .exec(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("bgr"))
            .collect()
    }

    /// Pid of one of the stack's processes (`stord`, `netd`, `vm-controller`, `dnsd`,
    /// `nats-server`), from its pid file, while that very process runs (pid *and* start time
    /// as recorded: never whatever reused the pid).
    pub fn pid_of(&self, name: &str) -> Option<i32> {
        running_from_pid_file(&self.dir.join(format!("run/stack/{name}.pid")))
    }

    /// Pids of the stack's running processes, from their pid files (see [`Stack::pid_of`]).
    pub fn pids(&self) -> Vec<i32> {
        let dir = self.dir.join("run/stack");
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| running_from_pid_file(&e.ok()?.path()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Stop whatever a failed test left running, then remove the files.
        let _ = self.banger(&["down"]);
        // A test that failed half-way may leave processes `down` could not reach: anything
        // whose command line names this stack's directory is the stack's.
        kill_processes_mentioning(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A lifecycle event of a VM `name` (id `id`, 32 hex digits) on host `h1`, as a controller
/// publishes it.
///
/// # Panics
/// When `name` or `id` are not valid.
pub fn sample_event(name: &str, id: &str, kind: EventKind, seq: u64) -> VmEvent {
    banger_proto::testing::vm_event(name, id, "h1", kind, seq, banger_bus::now_ms())
}

/// A kernel stand-in (the simulator boots none) and an empty 32 MiB ext4 root drive in `dir`,
/// the files `banger image register` needs.
///
/// # Panics
/// When the files cannot be made.
#[allow(clippy::unwrap_used, reason = "test fixture")]
pub fn stand_in_image_files(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"banger e2e: simulator stand-in for a kernel\n").unwrap();
    let rootfs = dir.join("rootfs.ext4");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&rootfs)
        .arg("32M")
        .output()
        .unwrap();
    assert!(made.status.success(), "mkfs.ext4 failed: {}", text(&made));
    (kernel, rootfs)
}

/// The pid recorded in a stack pid file (`PID START_TIME`, as `banger up` writes them), if
/// that very process still runs.
pub fn running_from_pid_file(path: &Path) -> Option<i32> {
    let id = ProcessId::read_pid_file(path).ok()?;
    id.is_running().then_some(id.pid())
}

/// SIGKILLs every process whose command line mentions `dir`. Each is signalled through a
/// pidfd opened before its command line is read, so a process that exits meanwhile is never
/// confused with the next owner of its pid.
pub fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id().cast_signed();
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if pid == me {
            continue;
        }
        let Ok(fd) = PidFd::open(pid) else {
            continue;
        };
        let mentions = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
        if mentions {
            let _ = fd.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Live processes whose command line mentions `dir`, as `"pid: command line"`, for a check
/// that a stack left nothing behind.
pub fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(&needle).then_some(format!("{pid}: {c}"))
        })
        .collect()
}

/// stdout and stderr of a command, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether `pid` runs (a zombie has exited and does not count).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Permission bits of `p`.
///
/// # Panics
/// When `p` does not exist.
#[allow(clippy::unwrap_used, reason = "test fixture")]
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Stream `stream`'s detail in a `/jsz?accounts=true&streams=true` body (its `config` and
/// `state`, when the body asked for them); `None` when the stream is not listed.
pub fn jsz_stream(jsz: &str, stream: &str) -> Option<serde_json::Value> {
    let jsz: serde_json::Value = serde_json::from_str(jsz).ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .filter_map(|a| a["stream_detail"].as_array())
        .flatten()
        .find(|s| s["name"] == stream)
        .cloned()
}

/// How many keys the JetStream key-value bucket `bucket` holds (`KV_<bucket>`'s subjects with a
/// message), from a `/jsz?accounts=true&streams=true` body; `None` when the stream is not
/// listed.
pub fn kv_keys_in_jsz(jsz: &str, bucket: &str) -> Option<u64> {
    jsz_stream(jsz, &format!("KV_{bucket}"))
        .map(|s| s["state"]["num_subjects"].as_u64().unwrap_or(0))
}

/// The buckets a lab is settled in: every live controller's heartbeat, and every netd's subnet
/// claim. Until each holds a key per host (the first seconds after the cluster elects its
/// JetStream leader), a `vm list` can end its gather on views that do not name a host yet.
pub const LAB_SETTLED_BUCKETS: [&str; 2] = ["BANGER_VM_CONTROLLERS", "BANGER_NETD_SUBNETS"];

/// Waits until every bucket of [`LAB_SETTLED_BUCKETS`] holds a key per host (`hosts`), reading
/// a node's `/jsz?accounts=true&streams=true` with `jsz`: the labs' tests begin after this.
///
/// # Panics
/// When a bucket is not settled within `wait`.
pub fn wait_until_lab_settled(
    hosts: usize,
    wait: std::time::Duration,
    jsz: impl Fn() -> Option<String>,
) {
    let hosts = u64::try_from(hosts).unwrap_or(u64::MAX);
    for bucket in LAB_SETTLED_BUCKETS {
        banger_testkit::wait_until_blocking(
            &format!("{bucket} to hold a key per host"),
            wait,
            || {
                jsz()
                    .and_then(|body| kv_keys_in_jsz(&body, bucket))
                    .is_some_and(|keys| keys >= hosts)
            },
        );
    }
}

#[cfg(test)]
mod jsz_tests {
    #[test]
    fn a_buckets_keys_are_its_streams_subjects() {
        let jsz = r#"{"account_details":[{"stream_detail":[
            {"name":"KV_BANGER_VM_CONTROLLERS","state":{"messages":5,"num_subjects":3}},
            {"name":"KV_BANGER_NETD_SUBNETS","state":{"messages":0}}]}]}"#;
        assert_eq!(super::kv_keys_in_jsz(jsz, "BANGER_VM_CONTROLLERS"), Some(3));
        assert_eq!(super::kv_keys_in_jsz(jsz, "BANGER_NETD_SUBNETS"), Some(0));
        assert_eq!(super::kv_keys_in_jsz(jsz, "BANGER_VM_NAMES"), None);
        assert_eq!(super::kv_keys_in_jsz("not json", "BANGER_VM_NAMES"), None);
    }
}
