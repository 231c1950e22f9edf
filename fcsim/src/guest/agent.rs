//! The guest's userspace: a real `banger-agent`, started as the guest's init would start it.
//!
//! Three ways, best first:
//!
//! 1. **The image's own agent.** With root, when the root drive is an ext4 image holding
//!    `/usr/local/bin/banger-agent` (as `banger image build` makes them; read from the
//!    image's ext4 structures, `debugfs` for an unusual layout; no mount), the agent runs *from inside the image*: in a private mount namespace the root
//!    drive is loop-mounted, the work disk loop-mounted at `<root>/root`, `/proc`, `/sys`,
//!    `/dev` and a tmpfs `/run` mounted, the simulator's socket directory bound at
//!    `/run/banger-fcsim` (the mounts, in order: see [`guest_mounts`]), and the agent exec'd
//!    chrooted into the image, with umask 022, by the guest's init (see below).
//!
//!    So `vm exec` runs the image's binaries and sees the image's `/etc/os-release`.
//! 2. **The host's agent with the work disk.** With root and an ext4 work disk (and a root drive
//!    without an agent), the host's agent runs in a private mount namespace where the work disk
//!    is loop-mounted at `/root`; the log says `SIMULATOR: image has no agent`.
//! 3. **The host's agent alone**, without root or a work disk; the log says why.
//!
//! **A guest dies with its VMM.** Under Firecracker every process of a guest ends when the VMM
//! process does, however it ends. Here, with root, the guest's processes live in a PID
//! namespace of their own (and a private mount namespace), under the guest's init,
//! `banger-fcsim-init` ([`banger_fcsim_init`]: one small process makes the namespaces, the
//! mounts and starts the agent, as `unshare`, two shells, `mount -a` and `chroot` did):
//!
//! - the simulator's guest thread spawns the init with `PR_SET_PDEATHSIG(SIGKILL)` (checked
//!   against a parent that died before the flag was set), so its first process dies with the
//!   simulator, even on SIGKILL;
//! - that death sends pid 1 SIGHUP: it SIGKILLs every process of the guest, detaches the
//!   guest's mounts and removes the simulator's guest directory (the agent's socket, the
//!   image's mount point), never crossing into a mount, then exits;
//! - when pid 1 exits, however it exits, the kernel SIGKILLs whatever is left in the
//!   namespace: the agent and every daemon a guest command started. The last process gone, the
//!   mount namespace goes with its mounts, the autoclear loop devices are released, and
//!   nothing holds the guest's network namespace any more.
//!
//! What only SIGKILL of the init itself (not of the simulator) would leave is the guest
//! directory under the temp dir; the next simulator to start sweeps directories of simulators
//! that are gone. Without root no namespace can be made: the agent runs as the simulator's
//! child with `PR_SET_PDEATHSIG(SIGKILL)`, and a daemon a command started can outlive it.
//!
//! A graceful stop goes through the init too: SIGTERM is passed on to the agent, SIGUSR1 and
//! SIGUSR2 stop and continue every process of the guest (pause and resume). The init takes
//! them from the moment it starts (they are blocked, never lost); until the first process has
//! forked pid 1 there is nobody to send them to, hence [`Agent::stop`] repeats SIGTERM.

use std::fs;
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use banger_fcsim_init::{Mount, Plan};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::log;

/// Exit code of the init when the root drive or the work disk cannot be mounted.
pub(crate) const MOUNT_FAILED_EXIT: i32 = banger_fcsim_init::MOUNT_FAILED_EXIT;

/// How long the agent may take to exit after SIGTERM (it lets in-flight replies finish for up
/// to 5 s itself).
const AGENT_STOP_GRACE: Duration = Duration::from_secs(6);

/// How often SIGTERM is repeated while the agent has not exited (see [`Agent::stop`]).
const TERM_REPEAT: Duration = Duration::from_millis(25);

/// How long the kernel may take to drop the mount and release the loop device after the
/// namespace's last process exits.
const LOOP_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The ext4 superblock magic, at byte 1080 of the image.
const EXT4_MAGIC: [u8; 2] = [0x53, 0xef];

/// Whether the file at `path` starts with an ext2/3/4 superblock.
pub(crate) fn is_ext4(path: &Path) -> bool {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080)).is_ok() && f.read_exact(&mut magic).is_ok() && magic == EXT4_MAGIC
}

/// Where the agent binary sits in a banger image.
pub(crate) const IMAGE_AGENT: &str = "/usr/local/bin/banger-agent";

/// Where the simulator's socket directory appears inside the image.
const IMAGE_SOCKET_DIR: &str = "/run/banger-fcsim";

/// Whether the ext4 image (file or block device) at `root` holds the banger agent, read from
/// the image ([`banger_ext4probe`]; no mount, no process), or with `debugfs` when the image's
/// layout is not one that reads.
pub(crate) fn image_has_agent(root: &Path) -> bool {
    banger_ext4probe::regular_file_at(root, IMAGE_AGENT)
        .unwrap_or_else(|| image_has_agent_debugfs(root))
}

/// [`image_has_agent`] answered by `debugfs`.
pub(crate) fn image_has_agent_debugfs(root: &Path) -> bool {
    std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {IMAGE_AGENT}"))
        .arg(root)
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Type: regular")
        })
}

/// The image's mounts, in order: the root drive at `mnt` (`loop` for an image file), the work
/// disk at `<mnt>/root`, `/proc`, `/sys`, `/dev` (recursive bind) and a tmpfs `/run`, then the
/// simulator's socket directory bound at [`IMAGE_SOCKET_DIR`]. Missing mount points are made
/// (`mkdir`, on the image when it lacks them, as `mkdir -p` did).
fn guest_mounts(
    root: &Path,
    root_loop: bool,
    mnt: &Path,
    disk: Option<&Path>,
    sockdir: &Path,
) -> Vec<Mount> {
    let at = |dir: &str| mnt.join(dir);
    let mut out = vec![Mount::new(
        root,
        mnt,
        "ext4",
        if root_loop { "loop" } else { "defaults" },
    )];
    if let Some(d) = disk {
        out.push(Mount::new(d, at("root"), "ext4", "loop,mkdir"));
    }
    out.extend([
        Mount::new("proc", at("proc"), "proc", "mkdir"),
        Mount::new("sysfs", at("sys"), "sysfs", "mkdir"),
        Mount::new("/dev", at("dev"), "none", "rbind,mkdir"),
        Mount::new("tmpfs", at("run"), "tmpfs", "mode=0755,mkdir"),
        Mount::new(
            sockdir,
            mnt.join(IMAGE_SOCKET_DIR.trim_start_matches('/')),
            "none",
            "bind,mkdir",
        ),
    ]);
    out
}

/// The agent's own status from the init's: the init reports an agent killed by signal N as
/// exit status 128 + N, as a shell does, which is turned back into "killed by signal N", as a
/// guest kernel would see its init die.
fn agent_status(init: std::process::ExitStatus) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    match init.code() {
        // A wait status whose low 7 bits are the signal number means "killed by that signal".
        Some(code @ 129..=192) => std::process::ExitStatus::from_raw(code - 128),
        _ => init,
    }
}

/// A running agent.
#[derive(Debug)]
pub(crate) struct Agent {
    /// The init's first process, whose child is the guest's pid 1; or, without root, the agent
    /// itself.
    child: Child,
    /// Whether the guest runs under `banger-fcsim-init` in a PID namespace of its own.
    with_init: bool,
    /// The images loop-mounted in its namespace (their loop devices are waited for at stop).
    images: Vec<PathBuf>,
}

/// Starts the agent listening on `socket`: the image's own when the root drive holds one, else
/// `agent_bin`, with `work_disk` mounted at `/root` when it can (see the module doc).
pub(crate) fn spawn(
    agent_bin: &Path,
    socket: &Path,
    work_disk: Option<&Path>,
    root_drive: Option<&Path>,
) -> io::Result<Agent> {
    let is_root = nix::unistd::geteuid().is_root();
    let disk = match work_disk {
        None => {
            log::info("no work disk: the agent runs without /root mounted");
            None
        }
        Some(_) if !is_root => {
            log::warn(
                "not root: the work disk is not mounted at /root (loop mounts need root); \
                 the agent runs in the host's mount namespace",
            );
            None
        }
        Some(disk) if !is_ext4(disk) => {
            log::warn(&format!(
                "work disk {} is not an ext4 image: not mounted at /root",
                disk.display()
            ));
            None
        }
        Some(disk) => Some(disk.to_owned()),
    };
    let image = match root_drive {
        Some(root) if is_root && image_has_agent(root) => Some(root.to_owned()),
        Some(root) => {
            log::serial(&format!(
                "the root drive has no {IMAGE_AGENT}: the host's agent runs (SIMULATOR)"
            ));
            log::info(&format!(
                "SIMULATOR: image {} has no agent ({IMAGE_AGENT}{}), running the host's agent {}",
                root.display(),
                if is_root {
                    ""
                } else {
                    " not looked for: not root"
                },
                agent_bin.display()
            ));
            None
        }
        None => None,
    };
    let listen = format!("unix:{}", socket.display());
    let guest_dir = socket.parent().unwrap_or(Path::new("/"));
    let mut images = Vec::new();
    let mut plan = Plan {
        guest_dir: Some(guest_dir.to_owned()),
        ..Plan::default()
    };
    let agent_args = |listen: String| ["--listen".into(), listen.into(), "--allow-exec".into()];
    if let Some(root) = &image {
        let mnt = guest_dir.join("rootfs");
        fs::create_dir_all(&mnt)?;
        let file_name = socket.file_name().map(|n| n.to_string_lossy().into_owned());
        let inner_listen = format!(
            "unix:{IMAGE_SOCKET_DIR}/{}",
            file_name.unwrap_or_else(|| "agent.sock".into())
        );
        let root_loop = fs::metadata(root).is_ok_and(|m| m.is_file());
        if root_loop {
            images.push(root.clone());
        }
        plan.mounts = guest_mounts(root, root_loop, &mnt, disk.as_deref(), guest_dir);
        plan.chroot = Some(mnt);
        // A guest's init runs its services with umask 022 (the simulator inherits
        // Firecracker's 000).
        plan.umask = Some(0o022);
        plan.command = vec![IMAGE_AGENT.into()];
        plan.command.extend(agent_args(inner_listen));
    } else {
        if let Some(d) = &disk {
            plan.mounts.push(Mount::new(d, "/root", "ext4", "loop"));
        }
        plan.command = vec![agent_bin.into()];
        plan.command.extend(agent_args(listen.clone()));
    }
    if let Some(d) = &disk {
        images.push(d.clone());
    }
    // Without root there are no namespaces and no mounts (no image, no work disk above): the
    // agent runs as the simulator's child.
    let with_init = is_root;
    let init_bin = crate::cli::beside_this_executable(banger_fcsim_init::NAME);
    let mut cmd = if with_init {
        let mut c = Command::new(&init_bin);
        c.args(plan.to_args());
        if image.is_some() {
            // The guest's environment, not the simulator's.
            c.env_clear()
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .env("HOME", "/root")
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                );
        }
        c
    } else {
        let mut c = Command::new(agent_bin);
        c.args(agent_args(listen));
        c
    };
    // The guest's console is the serial port: the agent's log goes there.
    let console = io::stdout().as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(console.try_clone()?))
        .stderr(Stdio::from(console))
        .current_dir("/")
        .kill_on_drop(true);
    // The simulator, as the child will see it as its parent.
    // SAFETY: getpid has no preconditions.
    let simulator = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec; it only calls prctl and getppid
    // (async-signal-safe, no memory effects with PR_SET_PDEATHSIG and a valid signal) and
    // allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            let rc = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // A simulator that died before the flag was set never sends the signal: check.
            if libc::getppid() != simulator {
                return Err(io::Error::other(
                    "the simulator exited while the agent started",
                ));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        let program = if with_init {
            init_bin.as_path()
        } else {
            agent_bin
        };
        io::Error::new(
            e.kind(),
            format!(
                "running {}: {e} (it is built with the simulator: cargo build --workspace --bins)",
                program.display()
            ),
        )
    })?;
    let pid = child.id().unwrap_or(0);
    match (&image, &disk) {
        (Some(root), _) => {
            log::info(&format!(
                "agent pid {pid} runs from inside image {} (chroot; root drive and work disk \
                 loop-mounted in a private mount namespace)",
                root.display()
            ));
            log::serial(&format!(
                "{IMAGE_AGENT} from the root drive runs chrooted into it (SIMULATOR: the \
                 image's init does not run)"
            ));
        }
        (None, Some(d)) => log::info(&format!(
            "agent pid {pid} runs with work disk {} loop-mounted at /root in a private mount \
             namespace",
            d.display()
        )),
        (None, None) => {}
    }
    Ok(Agent {
        child,
        with_init,
        images,
    })
}

impl Agent {
    /// The agent's pid, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `sig` to the agent (SIGSTOP/SIGCONT for pause/resume, SIGTERM to stop). Under the
    /// init, the init passes SIGTERM on to the agent and stops or continues the whole guest.
    pub(crate) fn signal(&self, sig: Signal) {
        if !self.with_init {
            // Our own unreaped child: its pid names nobody else.
            if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
            return;
        }
        let sig = match sig {
            Signal::SIGSTOP => Signal::SIGUSR1,
            Signal::SIGCONT => Signal::SIGUSR2,
            other => other,
        };
        if let Some(init) = self.init() {
            let _ = init.signal(sig);
        }
    }

    /// A pidfd on the guest's init (pid 1): the only child of the init's first process (our
    /// unreaped child, so its pid is stable), checked to still be that child after the pidfd
    /// is open.
    fn init(&self) -> Option<banger_procid::PidFd> {
        let outer = i32::try_from(self.pid()?).ok()?;
        let children = fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
        let init: i32 = children.split_whitespace().next()?.parse().ok()?;
        let fd = banger_procid::PidFd::open(init).ok()?;
        (banger_procid::stat(init)?.ppid == outer).then_some(fd)
    }

    /// If the agent already exited, its status (a failed mount shows here).
    pub(crate) fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten()?;
        Some(if self.with_init {
            agent_status(status)
        } else {
            status
        })
    }

    /// Stops the agent (SIGTERM, then SIGKILL after a grace period), kills whatever it left in
    /// its mount namespace, then waits for the loop devices behind its images to be released.
    pub(crate) async fn stop(mut self) {
        // The agent's own mount namespace: never the simulator's (the agent may not have
        // unshared yet, or may run without a namespace of its own). Held open, so the
        // namespace outlives the agent while its members are looked for: a namespace that died
        // can have its identity (the nsfs inode) reused at once by a new one — `ip netns exec`
        // makes one per command — and a scan by that identity would kill a stranger.
        let own = namespace_id(Path::new("/proc/self/ns/mnt"));
        let namespace = self
            .pid()
            .and_then(|p| fs::File::open(format!("/proc/{p}/ns/mnt")).ok())
            .filter(|ns| {
                let id = ns.metadata().ok().map(|m| (m.dev(), m.ino()));
                id.is_some() && id != own
            });
        // The loop devices mounted in the guest, read while it still runs: a few lines, where
        // a scan of every loop device of the host costs one sysfs read per device.
        let mounted = if self.images.is_empty() {
            Vec::new()
        } else {
            self.pid()
                .and_then(loop_devices_mounted_in)
                .unwrap_or_default()
        };
        self.signal(Signal::SIGCONT);
        // A SIGTERM sent before the init's first process has forked pid 1 has nobody to reach
        // (pid 1 itself keeps every SIGTERM from its first instruction on, and passes it on
        // once the agent runs). So it is repeated until the guest exits; to a guest already
        // shutting down a repeat is harmless.
        let deadline = tokio::time::Instant::now() + AGENT_STOP_GRACE;
        let exited = loop {
            self.signal(Signal::SIGTERM);
            let now = tokio::time::Instant::now();
            let slice = TERM_REPEAT.min(deadline.saturating_duration_since(now));
            match tokio::time::timeout(slice, self.child.wait()).await {
                Ok(r) => break Some(r),
                Err(_) if tokio::time::Instant::now() >= deadline => break None,
                Err(_) => {}
            }
        };
        match exited {
            Some(Ok(status)) => log::info(&format!("agent exited: {status}")),
            Some(Err(e)) => log::warn(&format!("waiting for the agent: {e}")),
            None => {
                log::warn("agent ignored SIGTERM: killing it");
                let _ = self.child.kill().await;
            }
        }
        // Daemons a command started keep the namespace (and its loop devices) alive: in a real
        // guest they die with the kernel, so here they die with the agent. Under the guest's
        // init they are gone already: the init's first process (the child just waited for)
        // exits only after pid 1 exited, and the kernel ends pid 1's exit only once every other
        // process of its PID namespace is gone. The scan is for a guest without one; it reads
        // every process of the host, so 100 VMs stopping at once would make 100 x that many
        // checks.
        if !self.with_init
            && !self.images.is_empty()
            && let Some(ns) = &namespace
        {
            let left = kill_namespace_members(ns);
            if left > 0 {
                log::info(&format!(
                    "killed {left} process(es) the agent left in the guest's mount namespace"
                ));
            }
        }
        // Let go of the namespace: an open handle keeps it, and so its mounts and loop devices.
        drop(namespace);
        for image in &self.images {
            let deadline = tokio::time::Instant::now() + LOOP_RELEASE_WAIT;
            // The image's device among those the guest had mounted; when it is not there (the
            // guest had not mounted it yet, or its mount failed) every loop device is looked
            // at, once. Then only the devices found are read again (one small sysfs read
            // each), however many other guests hold loop devices.
            let mut held = match still_backed_by(mounted.clone(), image) {
                found if found.is_empty() => loop_devices_backed_by(image),
                found => found,
            };
            loop {
                held = still_backed_by(held, image);
                if held.is_empty() {
                    log::info(&format!(
                        "{} unmounted, loop device released",
                        image.display()
                    ));
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    log::error(&format!(
                        "{} still attached to {} after the agent exited",
                        image.display(),
                        held.join(", ")
                    ));
                    break;
                }
                // The kernel clears an auto-clear loop device within a millisecond or two of
                // the last unmount: look again soon, the VMM's exit (and `vm stop`) waits on it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// A namespace's identity: the device and inode of its nsfs file (what `stat` on
/// `/proc/<pid>/ns/mnt` reports). Unique only while the namespace lives.
fn namespace_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// SIGKILLs every process whose mount namespace is `ns` (an open `/proc/<pid>/ns/mnt`, which
/// keeps the namespace and so its identity alive); returns how many. Under the guest's init
/// there are none left by then (the PID namespace took them); this covers a guest without one.
fn kill_namespace_members(ns: &fs::File) -> usize {
    let Some(target) = ns.metadata().ok().map(|m| (m.dev(), m.ino())) else {
        return 0;
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        // The pidfd first, the check second: a process that exits in between is not confused
        // with the next owner of its pid.
        let Ok(fd) = banger_procid::PidFd::open(pid) else {
            continue;
        };
        if namespace_id(Path::new(&format!("/proc/{pid}/ns/mnt"))) == Some(target)
            && fd.signal(Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// The loop devices (`loop3`, ...) whose backing file is `image`.
pub(crate) fn loop_devices_backed_by(image: &Path) -> Vec<String> {
    let Ok(image) = fs::canonicalize(image) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            (Path::new(backing.trim()) == image).then_some(name)
        })
        .collect()
}

/// The loop devices (`loop3`, ...) mounted in the mount namespace of process `pid`, from its
/// `mountinfo`; `None` when that cannot be read (the process is gone).
fn loop_devices_mounted_in(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    Some(loop_sources(&text))
}

/// The loop devices among the mount sources of a `mountinfo` text (`... - <type> <source>
/// <options>`), each once.
fn loop_sources(mountinfo: &str) -> Vec<String> {
    let mut devices: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| {
            let (_, tail) = line.split_once(" - ")?;
            let dev = tail.split_whitespace().nth(1)?.strip_prefix("/dev/")?;
            dev.starts_with("loop").then(|| dev.to_owned())
        })
        .collect();
    devices.sort();
    devices.dedup();
    devices
}

/// Of the loop devices `devices`, those whose backing file is still `image` (a device that was
/// released, or set up again for another file, is left out).
pub(crate) fn still_backed_by(devices: Vec<String>, image: &Path) -> Vec<String> {
    if devices.is_empty() {
        return devices;
    }
    let Ok(image) = fs::canonicalize(image) else {
        return Vec::new();
    };
    devices
        .into_iter()
        .filter(|dev| {
            fs::read_to_string(Path::new("/sys/block").join(dev).join("loop/backing_file"))
                .is_ok_and(|backing| Path::new(backing.trim()) == image)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ext4 image made by `mkfs.ext4 -d` from the tree `build` makes; `None` (announced as
    /// a skip) when mkfs.ext4 cannot run here.
    fn image(dir: &Path, build: impl FnOnce(&Path)) -> Option<std::path::PathBuf> {
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        build(&tree);
        banger_testkit::ext4_image_of(&tree, &dir.join("root.ext4"), "16M", &[])
    }

    const AGENT: &str = "/usr/local/bin/banger-agent";

    /// Builds a tree to make an image of.
    type Layout = fn(&Path);

    #[test]
    fn the_agent_is_found_where_debugfs_finds_it_and_nowhere_else() {
        if !banger_testkit::have_program("debugfs") {
            banger_testkit::skip("debugfs is not installed");
            return;
        }
        let layouts: [(&str, Layout); 5] = [
            ("with the agent", |t| {
                std::fs::create_dir_all(t.join("usr/local/bin")).unwrap();
                // Many neighbours, so the directory spans blocks.
                for i in 0..300 {
                    std::fs::write(t.join(format!("usr/local/bin/tool-{i:03}")), b"x").unwrap();
                }
                std::fs::write(t.join("usr/local/bin/banger-agent"), b"elf").unwrap();
            }),
            ("without it", |t| {
                std::fs::create_dir_all(t.join("usr/local/bin")).unwrap();
                std::fs::write(t.join("usr/local/bin/other"), b"x").unwrap();
            }),
            ("with a directory in its place", |t| {
                std::fs::create_dir_all(t.join("usr/local/bin/banger-agent")).unwrap();
            }),
            ("with a file where a directory should be", |t| {
                std::fs::create_dir_all(t.join("usr")).unwrap();
                std::fs::write(t.join("usr/local"), b"x").unwrap();
            }),
            ("empty", |_| {}),
        ];
        for (what, build) in layouts {
            let d = tempfile::tempdir().unwrap();
            let Some(img) = image(d.path(), build) else {
                return;
            };
            let native = banger_ext4probe::regular_file_at(&img, AGENT);
            assert_eq!(native, Some(image_has_agent_debugfs(&img)), "{what}");
        }
    }

    #[test]
    fn a_link_on_the_path_and_a_file_that_is_not_ext4_are_left_to_debugfs() {
        let d = tempfile::tempdir().unwrap();
        let Some(img) = image(d.path(), |t| {
            std::fs::create_dir_all(t.join("opt/bin")).unwrap();
            std::fs::create_dir_all(t.join("usr/local")).unwrap();
            std::os::unix::fs::symlink("../../opt/bin", t.join("usr/local/bin")).unwrap();
        }) else {
            return;
        };
        assert_eq!(banger_ext4probe::regular_file_at(&img, AGENT), None);
        let not_ext4 = d.path().join("zeros");
        std::fs::write(&not_ext4, vec![0u8; 4096]).unwrap();
        assert_eq!(banger_ext4probe::regular_file_at(&not_ext4, AGENT), None);
        assert_eq!(
            banger_ext4probe::regular_file_at(&d.path().join("missing"), AGENT),
            None
        );
    }

    #[test]
    fn the_guest_mounts_come_in_order_and_survive_the_inits_command_line() {
        let mounts = guest_mounts(
            Path::new("/var/lib/banger/my vm/root.ext4"),
            true,
            Path::new("/tmp/g/rootfs"),
            Some(Path::new("/w\\d\tisk")),
            Path::new("/tmp/g"),
        );
        let line = |m: &Mount| {
            format!(
                "{} {} {} {}",
                m.source.to_string_lossy(),
                m.target.display(),
                m.fstype,
                m.options.join(",")
            )
        };
        assert_eq!(
            mounts.iter().map(line).collect::<Vec<_>>(),
            [
                "/var/lib/banger/my vm/root.ext4 /tmp/g/rootfs ext4 loop",
                "/w\\d\tisk /tmp/g/rootfs/root ext4 loop,mkdir",
                "proc /tmp/g/rootfs/proc proc mkdir",
                "sysfs /tmp/g/rootfs/sys sysfs mkdir",
                "/dev /tmp/g/rootfs/dev none rbind,mkdir",
                "tmpfs /tmp/g/rootfs/run tmpfs mode=0755,mkdir",
                "/tmp/g /tmp/g/rootfs/run/banger-fcsim none bind,mkdir",
            ]
        );
        let plan = Plan {
            mounts: mounts.clone(),
            command: vec![IMAGE_AGENT.into()],
            ..Plan::default()
        };
        assert_eq!(
            Plan::from_args(plan.to_args()).map(|p| p.mounts),
            Ok(mounts)
        );
        // A block device needs no loop, and a guest without a work disk has no /root mount.
        let mounts = guest_mounts(
            Path::new("/dev/vdb"),
            false,
            Path::new("/m"),
            None,
            Path::new("/s"),
        );
        assert!(mounts[0].options.is_empty(), "{:?}", mounts[0]);
        assert!(!mounts.iter().any(|m| m.target == Path::new("/m/root")));
    }

    #[test]
    fn the_inits_128_plus_n_is_the_agents_death_by_signal_n() {
        use std::os::unix::process::ExitStatusExt as _;
        // Wait statuses: exit code in the second byte, a signal in the low bits.
        let exited = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(agent_status(exited(137)).signal(), Some(9));
        assert_eq!(agent_status(exited(143)).signal(), Some(15));
        assert_eq!(agent_status(exited(127)).code(), Some(127));
        assert_eq!(
            agent_status(exited(MOUNT_FAILED_EXIT)).code(),
            Some(MOUNT_FAILED_EXIT)
        );
        assert_eq!(agent_status(exited(0)).code(), Some(0));
    }

    #[test]
    fn ext4_is_recognised_by_its_superblock_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut bytes = vec![0u8; 2048];
        fs::write(&p, &bytes).unwrap();
        assert!(!is_ext4(&p));
        bytes[1080] = 0x53;
        bytes[1081] = 0xef;
        fs::write(&p, &bytes).unwrap();
        assert!(is_ext4(&p));
        assert!(!is_ext4(&dir.path().join("missing")));
    }

    #[test]
    fn the_loop_devices_of_a_mount_table_are_its_loop_sources() {
        let table = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
310 300 7:12 / /tmp/g/rootfs rw,relatime - ext4 /dev/loop12 rw
311 310 7:3 / /tmp/g/rootfs/root rw,relatime - ext4 /dev/loop3 rw
312 310 7:3 / /tmp/g/again rw,relatime - ext4 /dev/loop3 rw
313 27 259:0 / /data rw shared:5 - xfs /dev/nvme0n1 rw
";
        assert_eq!(loop_sources(table), ["loop12", "loop3"]);
        assert!(loop_sources("").is_empty());
        assert!(
            loop_devices_mounted_in(u32::MAX).is_none(),
            "no such process"
        );
    }

    #[test]
    fn a_released_loop_device_is_no_longer_counted_as_holding_the_image() {
        if !banger_testkit::require_root() {
            return;
        }
        if !banger_testkit::have_program("losetup") {
            banger_testkit::skip("losetup is not installed");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let image = d.path().join("disk.img");
        fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        if !out.status.success() {
            banger_testkit::skip(&format!(
                "no loop device can be set up here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return;
        }
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let name = dev.trim_start_matches("/dev/").to_owned();
        let found = loop_devices_backed_by(&image);
        assert_eq!(
            found,
            std::slice::from_ref(&name),
            "the full scan finds the device"
        );
        let other = d.path().join("other.img");
        fs::write(&other, b"x").unwrap();
        assert!(
            still_backed_by(found.clone(), &other).is_empty(),
            "a device backed by another file does not hold this one"
        );
        assert_eq!(still_backed_by(found.clone(), &image), [name]);
        let detached = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&dev)
            .status()
            .unwrap();
        assert!(detached.success());
        banger_testkit::wait_until_blocking(
            "the loop device released",
            Duration::from_secs(5),
            || still_backed_by(found.clone(), &image).is_empty(),
        );
        assert!(loop_devices_backed_by(&image).is_empty());
    }
}
