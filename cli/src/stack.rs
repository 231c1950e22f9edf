//! The local single-host stack that `banger up` starts and `banger down` stops.
//!
//! Layout (state dir defaults to /var/lib/banger, runtime dir to /run/banger):
//!
//! | path | what |
//! | --- | --- |
//! | `<state>/stack.toml` | bus URL and generated credentials, VMM choice (mode 0600) |
//! | `<state>/nats/nats.conf`, `<state>/nats/jetstream/` | the nats-server `up` manages |
//! | `<state>/logs/<name>.log` | each process's output |
//! | `<runtime>/stack/<name>.pid` | each process's pid |
//!
//! Services get `--config <state>/stack.toml`; the CLI finds the same file by default (see
//! `banger_bus::config`), so credentials never appear on a command line or in the environment.

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The services of a host, in start order (stopped in reverse).
pub const SERVICES: &[&str] = &["stord", "netd", "vm-controller", "dnsd"];

/// The name under which the managed nats-server's pid and log are kept.
pub const NATS: &str = "nats-server";

/// Paths of one stack.
#[derive(Debug, Clone)]
pub struct StackPaths {
    /// State dir.
    pub state: PathBuf,
    /// Runtime dir.
    pub runtime: PathBuf,
}

impl StackPaths {
    /// The stack file.
    pub fn stack_file(&self) -> PathBuf {
        self.state.join(banger_bus::config::STACK_FILE)
    }

    /// The managed nats-server's directory.
    pub fn nats_dir(&self) -> PathBuf {
        self.state.join("nats")
    }

    /// Where logs go.
    pub fn log_dir(&self) -> PathBuf {
        self.state.join("logs")
    }

    /// A process's log file.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    /// Where pid files go.
    pub fn pid_dir(&self) -> PathBuf {
        self.runtime.join("stack")
    }

    /// A process's pid file.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.pid_dir().join(format!("{name}.pid"))
    }
}

/// Writes `contents` to `path` readable and writable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    banger_bus::private::write_file(path, contents.as_bytes())
}

/// A random secret: 24 bytes from the kernel, hex-encoded.
pub fn random_secret() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut buf = [0u8; 24];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The config of a stack's nats-server: listening on `listen` only, JetStream under `store`,
/// one user with a password; `writer` names the command that wrote it.
pub fn nats_conf(listen: &str, store: &Path, user: &str, password: &str, writer: &str) -> String {
    format!(
        "# Written by `{writer}`.\nlisten: \"{listen}\"\n\
         # vm.list of a host with thousands of VMs is larger than the 1 MB default.\n\
         max_payload: 8MB\n\
         jetstream {{ store_dir: {store:?} }}\n\
         authorization {{ user: {user:?}, password: {password:?} }}\n",
        store = store.display().to_string(),
    )
}

/// Starts `program` detached (own process group, no terminal), output appended to `log`,
/// and records its pid in `pid_file`.
pub fn spawn_detached(
    program: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
) -> std::io::Result<u32> {
    // Logs and pid files are root's (owner-only, in owner-only directories).
    let out = banger_bus::private::create_file(log)?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: Ctrl-C in the shell that ran `banger up` does not reach it.
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    banger_bus::private::write_file(pid_file, format!("{pid}\n").as_bytes())?;
    // The child is deliberately not waited for: `banger down` stops it by pid. Dropping the
    // handle does not kill it.
    drop(child);
    Ok(pid)
}

/// The pid recorded for `name`, if its process still runs the expected program.
pub fn running_pid(paths: &StackPaths, name: &str, program: &str) -> Option<Pid> {
    let text = fs::read_to_string(paths.pid_file(name)).ok()?;
    let raw: i32 = text.trim().parse().ok()?;
    let pid = Pid::from_raw(raw);
    // Guard against pid reuse: the process must still be the program we started.
    let cmdline = fs::read(format!("/proc/{raw}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    let zombie = fs::read_to_string(format!("/proc/{raw}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    (argv0.ends_with(program) && !zombie).then_some(pid)
}

/// Hypervisor processes (Firecracker or the simulator) whose API socket lies under
/// `api_dir`: the VMs of this stack's controller, found by their command line (`--api-sock
/// PATH`), so they are found even when the controller is gone.
pub fn hypervisor_pids(api_dir: &Path) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(2).any(|w| {
                w[0] == b"--api-sock"
                    && Path::new(std::ffi::OsStr::from_bytes(w[1])).starts_with(api_dir)
            })
        })
        .map(Pid::from_raw)
        .collect()
}

/// Sends SIGTERM and waits up to `grace` for the process to go, then SIGKILLs it. Returns
/// whether it had to be killed.
pub fn stop_pid(pid: Pid, grace: Duration) -> bool {
    if kill(pid, Signal::SIGTERM).is_err() {
        return false;
    }
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if !alive(pid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    let end = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    // Our detached children are reparented to init, which reaps them; a zombie counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where the service binaries are: next to the running `banger`.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Whether a real Firecracker can run here: the binary on PATH and /dev/kvm usable.
pub fn real_firecracker_usable() -> Result<(), String> {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("firecracker").is_file())
    });
    if !on_path {
        return Err("no `firecracker` binary on PATH".into());
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn private_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/stack.toml");
        write_private(&p, "x = 1\n").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, "x = 2\n").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "x = 2\n");
    }

    #[test]
    fn secrets_are_random_hex() {
        let a = random_secret().unwrap();
        let b = random_secret().unwrap();
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_recycled_pid_is_not_mistaken_for_our_process() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StackPaths {
            state: dir.path().into(),
            runtime: dir.path().into(),
        };
        fs::create_dir_all(paths.pid_dir()).unwrap();
        // Our own pid runs the test binary, not banger-netd.
        fs::write(paths.pid_file("netd"), format!("{}\n", std::process::id())).unwrap();
        assert!(running_pid(&paths, "netd", "banger-netd").is_none());
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        assert!(running_pid(&paths, "netd", &name).is_some());
    }
}
