//! The local single-host stack that `banger up` starts and `banger down` stops.
//!
//! Layout (state dir defaults to /var/lib/banger, runtime dir to /run/banger):
//!
//! | path | what |
//! | --- | --- |
//! | `<state>/stack.toml` | bus URL and generated credentials, VMM choice (mode 0600) |
//! | `<state>/nats/nats.conf`, `<state>/nats/jetstream/` | the nats-server `up` manages |
//! | `<state>/logs/<name>.log` | each process's output |
//! | `<runtime>/stack/<name>.pid` | each process's identity: `PID START_TIME` (see `banger_procid`) |
//!
//! Services get `--config <state>/stack.toml`; the CLI finds the same file by default (see
//! `banger_bus::config`), so credentials never appear on a command line or in the environment.

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_procid::{self as procid, PidFd, ProcessId, Termination};

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

/// A process `up` started in this run: its child handle (so its liveness is asked of the
/// kernel, not read from `/proc`, and it can be stopped without any doubt about who it is) and
/// its identity as written to its pid file.
#[derive(Debug)]
pub struct Spawned {
    /// The process, our child until `banger up` exits (unreaped, its pid cannot be reused).
    pub child: Child,
    /// Its pid and start time.
    pub id: ProcessId,
}

/// Starts `program` detached (own process group, no terminal), output appended to `log`,
/// and records its identity (`PID START_TIME`) in `pid_file`.
pub fn spawn_detached(
    program: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
) -> std::io::Result<Spawned> {
    // Logs and pid files are root's (owner-only, in owner-only directories).
    if let Some(dir) = pid_file.parent() {
        banger_bus::private::create_dir_all(dir)?;
    }
    let out = banger_bus::private::create_file(log)?;
    let err = out.try_clone()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: Ctrl-C in the shell that ran `banger up` does not reach it.
        .process_group(0)
        .spawn()?;
    // Our unreaped child: its pid is ours until we wait for it, so this reads its own stat
    // (a zombie's too: its start time stays readable).
    let id = i32::try_from(child.id())
        .ok()
        .and_then(|pid| procid::stat(pid).map(|s| ProcessId::new(pid, s.start_time)));
    let written = match id {
        Some(id) => id.write_pid_file(pid_file).map(|()| id),
        None => Err(std::io::Error::other(format!(
            "reading the start time of {} (pid {})",
            program.display(),
            child.id()
        ))),
    };
    match written {
        // The child is not waited for beyond this run: `banger down` stops it by its
        // identity. Dropping the handle does not kill it.
        Ok(id) => Ok(Spawned { child, id }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The arguments that tie a process to this stack: `--config <stack file>` for a service,
/// `-c <nats.conf>` for the managed nats-server. Another stack's copy of the same program
/// (same binary, another state dir) never has them.
pub fn stack_args(paths: &StackPaths, name: &str) -> [Vec<u8>; 2] {
    let (flag, file) = if name == NATS {
        ("-c", paths.nats_dir().join("nats.conf"))
    } else {
        ("--config", paths.stack_file())
    };
    [
        flag.as_bytes().to_vec(),
        file.as_os_str().as_bytes().to_vec(),
    ]
}

/// The process recorded for `name`, if it still runs: same pid *and* start time as recorded,
/// running `program`, with this stack's arguments ([`stack_args`]). A pid that was reused by
/// anything else — another stack's copy of the same service included — is not ours.
pub fn running_pid(paths: &StackPaths, name: &str, program: &str) -> Option<ProcessId> {
    let text = fs::read_to_string(paths.pid_file(name)).ok()?;
    let id = match ProcessId::parse(&text) {
        Ok(id) => id,
        // A pid file of an older banger holds the pid alone: then the command line is all
        // there is to go by.
        Err(_) => ProcessId::of(text.trim().parse().ok()?)?,
    };
    is_stack_process(paths, name, program, id).then_some(id)
}

/// Whether `id` runs and is `name` of this stack (see [`running_pid`]).
pub fn is_stack_process(paths: &StackPaths, name: &str, program: &str, id: ProcessId) -> bool {
    if !id.is_running() {
        return false;
    }
    let Some(args) = procid::cmdline(id.pid()) else {
        return false;
    };
    let argv0_ok = args
        .first()
        .is_some_and(|a| a.ends_with(program.as_bytes()));
    let wanted = stack_args(paths, name);
    argv0_ok && procid::args_contain(&args, &[&wanted[0], &wanted[1]])
}

/// Hypervisor processes (Firecracker or the simulator) whose API socket lies under
/// `api_dir`: the VMs of this stack's controller, found by their command line (`--api-sock
/// PATH`), so they are found even when the controller is gone. Each comes as a pidfd opened
/// *before* its command line was read, so it can only ever signal the process looked at.
pub fn hypervisors(api_dir: &Path) -> Vec<PidFd> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let fd = PidFd::open(pid).ok()?;
            let args = procid::cmdline(pid)?;
            args.windows(2)
                .any(|w| {
                    w[0] == b"--api-sock"
                        && Path::new(std::ffi::OsStr::from_bytes(&w[1])).starts_with(api_dir)
                })
                .then_some(fd)
        })
        .collect()
}

/// Stops the process `id` if it still runs: SIGTERM, up to `grace`, then SIGKILL — all
/// through a pidfd, so a process that exited meanwhile is never confused with a stranger that
/// got its pid.
pub fn stop_process(id: ProcessId, grace: Duration) -> Termination {
    match id.open() {
        Some(fd) => fd.terminate(grace),
        None => Termination::AlreadyGone,
    }
}

/// Stops the processes one `banger up` started, newest first, and removes their pid files:
/// what a failed `up` does so that it leaves nothing running. Each is still our child, so it
/// is signalled and reaped through its handle.
pub fn stop_started(paths: &StackPaths, started: Vec<(&str, Spawned)>, grace: Duration) {
    for (name, mut spawned) in started.into_iter().rev() {
        stop_child(&mut spawned.child, grace);
        // Only our own record: never a pid file another run wrote meanwhile.
        if ProcessId::read_pid_file(&paths.pid_file(name)).is_ok_and(|id| id == spawned.id) {
            let _ = fs::remove_file(paths.pid_file(name));
        }
    }
}

/// SIGTERM, up to `grace` to exit, SIGKILL, then reaps: our own child, so its pid cannot
/// name anyone else until the final wait.
fn stop_child(child: &mut Child, grace: Duration) {
    let fd = i32::try_from(child.id())
        .ok()
        .and_then(|pid| PidFd::open(pid).ok());
    if matches!(child.try_wait(), Ok(None))
        && let Some(fd) = fd
    {
        fd.terminate(grace);
    }
    let _ = child.kill();
    let _ = child.wait();
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

    /// A stand-in for service `name` of the stack at `paths`: a shell whose argv[0] is the
    /// service's program and whose arguments hold `--config <stack file>`, as `up` starts it.
    /// It blocks opening a FIFO nobody writes (no child process that could outlive it);
    /// with `ignore_term` it ignores SIGTERM.
    fn fake_service(paths: &StackPaths, name: &str, ignore_term: bool) -> Spawned {
        let [flag, file] = stack_args(paths, name);
        let program = format!("banger-{name}");
        let trap = if ignore_term { "trap '' TERM; " } else { "" };
        let args = vec![
            "-c".to_owned(),
            format!(r#"{trap}read x <"$2"; :"#),
            String::from_utf8(flag).unwrap(),
            String::from_utf8(file).unwrap(),
            fifo(&paths.state).display().to_string(),
        ];
        // `spawn_detached` runs the program by path; argv[0] is what the kernel shows.
        let dir = paths.state.join("bin");
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join(&program);
        if !bin.exists() {
            std::os::unix::fs::symlink("/bin/sh", &bin).unwrap();
        }
        let spawned =
            spawn_detached(&bin, &args, &paths.log_file(name), &paths.pid_file(name)).unwrap();
        wait_for_exec(spawned.id.pid());
        spawned
    }

    /// Waits until `pid` shows its command line: right after spawn it can read empty for an
    /// instant (the parent resumes before the child's exec has laid out its arguments).
    fn wait_for_exec(pid: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while procid::cmdline(pid).is_none() {
            assert!(std::time::Instant::now() < deadline, "{pid} never exec'd");
            std::thread::yield_now();
        }
    }

    /// A FIFO in `dir`: opening it for reading blocks until someone writes, which nobody does.
    fn fifo(dir: &Path) -> PathBuf {
        let path = dir.join("never-written");
        fs::create_dir_all(dir).unwrap();
        if !path.exists() {
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        }
        path
    }

    fn stack_in(dir: &Path) -> StackPaths {
        StackPaths {
            state: dir.join("state"),
            runtime: dir.join("run"),
        }
    }

    #[test]
    fn only_the_recorded_process_of_this_stack_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let paths = stack_in(dir.path());
        let mut svc = fake_service(&paths, "netd", false);
        assert_eq!(
            running_pid(&paths, "netd", "banger-netd"),
            Some(svc.id),
            "the process up started is found"
        );
        // The same process seen from another stack (another state dir, so another
        // --config): not that stack's netd.
        let other = stack_in(&dir.path().join("other"));
        fs::create_dir_all(other.pid_dir()).unwrap();
        svc.id.write_pid_file(&other.pid_file("netd")).unwrap();
        assert_eq!(running_pid(&other, "netd", "banger-netd"), None);
        // Another program with the right arguments is not netd either.
        assert_eq!(running_pid(&paths, "netd", "banger-dnsd"), None);
        // A recorded start time that differs: the pid was reused by a process started later.
        let recycled = ProcessId::new(svc.id.pid(), svc.id.start_time() + 1);
        recycled.write_pid_file(&paths.pid_file("netd")).unwrap();
        assert_eq!(running_pid(&paths, "netd", "banger-netd"), None);
        // A pid file of an older banger (pid alone) still finds it, by its command line.
        fs::write(paths.pid_file("netd"), format!("{}\n", svc.id.pid())).unwrap();
        assert_eq!(running_pid(&paths, "netd", "banger-netd"), Some(svc.id));
        svc.id.write_pid_file(&paths.pid_file("netd")).unwrap();
        svc.child.kill().unwrap();
        svc.child.wait().unwrap();
        assert_eq!(running_pid(&paths, "netd", "banger-netd"), None, "exited");
    }

    #[test]
    fn a_pid_now_held_by_a_stranger_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let paths = stack_in(dir.path());
        fs::create_dir_all(paths.pid_dir()).unwrap();
        // This test process stands for whatever got the pid: right pid, its own start time,
        // but not a banger service of this stack.
        let me = ProcessId::current();
        me.write_pid_file(&paths.pid_file("netd")).unwrap();
        assert_eq!(running_pid(&paths, "netd", "banger-netd"), None);
        fs::write(paths.pid_file("netd"), format!("{}\n", me.pid())).unwrap();
        assert_eq!(running_pid(&paths, "netd", "banger-netd"), None);
        assert_eq!(
            stop_process(
                ProcessId::new(me.pid(), me.start_time() + 1),
                Duration::ZERO
            ),
            Termination::AlreadyGone,
            "no signal for a recycled pid"
        );
    }

    #[test]
    fn a_failed_up_stops_everything_it_started_and_removes_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let paths = stack_in(dir.path());
        let a = fake_service(&paths, "stord", false);
        // One that ignores SIGTERM: killed after the grace period.
        let b = fake_service(&paths, "netd", true);
        let c = fake_service(&paths, "dnsd", false);
        let ids = [a.id, b.id, c.id];
        let fds: Vec<PidFd> = ids.iter().map(|id| id.open().unwrap()).collect();
        // A record another run wrote meanwhile is not ours to remove.
        let newer = ProcessId::new(c.id.pid(), c.id.start_time() + 7);
        newer.write_pid_file(&paths.pid_file("dnsd")).unwrap();
        stop_started(
            &paths,
            vec![("stord", a), ("netd", b), ("dnsd", c)],
            Duration::from_millis(300),
        );
        for (fd, id) in fds.iter().zip(ids) {
            assert!(fd.has_exited(), "{id} still runs");
            assert!(!id.is_running());
        }
        assert!(!paths.pid_file("stord").exists());
        assert!(!paths.pid_file("netd").exists());
        assert_eq!(
            ProcessId::read_pid_file(&paths.pid_file("dnsd")).unwrap(),
            newer
        );
    }

    #[test]
    fn hypervisors_are_found_by_their_api_socket_under_the_stack() {
        let dir = tempfile::tempdir().unwrap();
        let api_dir = dir.path().join("run/vm-controller");
        let sock = api_dir.join("vm1/api.sock");
        let mut vmm = Command::new("sh")
            .args(["-c", r#"read x <"$3"; :"#, "banger-vmm", "--api-sock"])
            .arg(&sock)
            .arg(fifo(dir.path()))
            .spawn()
            .unwrap();
        wait_for_exec(i32::try_from(vmm.id()).unwrap());
        let found = hypervisors(&api_dir);
        assert_eq!(
            found.iter().map(PidFd::pid).collect::<Vec<_>>(),
            [i32::try_from(vmm.id()).unwrap()]
        );
        assert!(hypervisors(&dir.path().join("run/elsewhere")).is_empty());
        assert_eq!(
            found[0].terminate(Duration::from_secs(5)),
            Termination::Exited
        );
        vmm.wait().unwrap();
    }
}
