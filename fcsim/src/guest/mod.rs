//! The simulated guest: what `InstanceStart` boots and `SendCtrlAltDel` shuts down.
//!
//! No kernel runs. "Booting" means, for real, on the host:
//! - a guest network namespace is made, with its own tap `eth0` carrying the guest MAC and the
//!   `ip=` address and gateway ([`netns`]); frames are copied between it and the host tap the
//!   network interface names (opened at `PUT /network-interfaces`, as Firecracker does), so the
//!   namespace's kernel network stack answers ARP, ping and TCP ([`net`]);
//! - the real `banger-agent` starts in that namespace, with the work disk loop-mounted at
//!   `/root` in a private mount namespace when possible; when the root drive is an image with
//!   the agent in it (`/usr/local/bin/banger-agent`, as `banger image build` makes), the root
//!   drive is mounted too and the image's own agent runs chrooted into it ([`agent`]);
//! - the agent's Unix socket is registered as guest vsock port 52, so hybrid vsock
//!   `CONNECT 52` reaches it ([`vsock`]); it lives in a private directory,
//!   `<tmp>/banger-fcsim-<pid>/`, mode 0700, so no other user can reach the agent around the
//!   hypervisor's vsock socket (which is guarded by the controller's 0700 run directory);
//! - the serial console (stdout) shows boot lines, each marked `[SIMULATED GUEST]`.

pub(crate) mod agent;
pub(crate) mod dirwatch;
pub(crate) mod init;
pub(crate) mod net;
pub(crate) mod netns;
pub(crate) mod vsock;

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::log;
use crate::vmm::Exit;
use agent::Agent;
use net::{GuestIface, NetCounters, Tap, mac_string};
use netns::{GUEST_IFACE, GuestNetns};
use vsock::GuestPorts;

/// The vsock port the agent listens on (banger's default agent port).
pub(crate) const AGENT_PORT: u32 = banger_proto::agent::DEFAULT_AGENT_PORT;

/// How long the agent may take to create its socket after it was spawned.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the guest checks whether its init (the agent) is still there when it cannot be
/// told (no pidfd on it), and while the agent is not listening yet: a kernel knows at once;
/// 50 ms is well inside what anyone watching the console could tell apart.
const INIT_WATCH: Duration = Duration::from_millis(50);

/// What the guest boots with.
#[derive(Debug)]
pub(crate) struct BootPlan {
    pub(crate) hostname: String,
    pub(crate) cmdline: String,
    pub(crate) net: Option<(Tap, GuestIface)>,
    pub(crate) work_disk: Option<PathBuf>,
    /// The root drive's backing file (or block device).
    pub(crate) root_drive: Option<PathBuf>,
    pub(crate) agent_bin: PathBuf,
    /// Where the guest's Unix sockets go (created here, removed at shutdown).
    pub(crate) runtime_dir: PathBuf,
    pub(crate) slow_boot: Option<Duration>,
    /// Where the guest's reboot after a kernel panic goes (the VMM then exits).
    pub(crate) exit: mpsc::UnboundedSender<Exit>,
}

/// A booted (or booting) guest.
#[derive(Debug)]
pub(crate) struct Guest {
    /// The two frame-copy loops (host tap ⇄ eth0); they own both taps.
    net_tasks: Vec<JoinHandle<()>>,
    /// The guest thread; dropped last, after the agent stopped.
    netns: Arc<GuestNetns>,
    boot_task: JoinHandle<()>,
    agent: Arc<Mutex<Option<Agent>>>,
    paused: Arc<AtomicBool>,
    runtime_dir: PathBuf,
}

impl Guest {
    /// Boots: makes the guest network namespace (with eth0 when the VM has a network
    /// interface) and starts copying frames now; starts the agent in the background (after the
    /// slow-boot delay, if any). Fails when the namespace or eth0 cannot be made.
    pub(crate) async fn boot(
        plan: BootPlan,
        ports: Arc<GuestPorts>,
        counters: Arc<NetCounters>,
    ) -> Result<Self, String> {
        log::serial("banger-fcsim SIMULATOR: no guest kernel runs; this console is simulated");
        log::serial(&format!("Kernel command line: {}", plan.cmdline));
        let (host_tap, iface) = match plan.net {
            Some((tap, iface)) => (Some(tap), Some(iface)),
            None => (None, None),
        };
        let (netns, eth0) = GuestNetns::create(iface, plan.hostname.clone())
            .await
            .map_err(|e| e.to_string())?;
        let netns = Arc::new(netns);
        let paused = Arc::new(AtomicBool::new(false));
        let net_tasks = match (host_tap, eth0, iface) {
            (Some(host), Some(eth0), Some(i)) => {
                let host_name = host.name().to_owned();
                let tasks = net::connect(host, eth0, &paused, &counters)
                    .map_err(|e| format!("polling the taps: {e}"))?;
                log::serial(&format!(
                    "{GUEST_IFACE}: {}/{} (mac {}) in the guest network namespace, frames copied \
                     to and from host tap {host_name}",
                    i.ip,
                    i.prefix_len,
                    mac_string(i.mac),
                ));
                tasks.into()
            }
            _ => {
                log::serial(&format!(
                    "{GUEST_IFACE}: not configured (no network interface or no ip= boot argument){}",
                    if netns.isolated() { "; lo only" } else { "" }
                ));
                Vec::new()
            }
        };
        let agent = Arc::new(Mutex::new(None));
        let userspace = Userspace {
            bin: plan.agent_bin,
            dir: plan.runtime_dir.clone(),
            work_disk: plan.work_disk,
            root_drive: plan.root_drive,
            slow_boot: plan.slow_boot,
            hostname: plan.hostname,
            after_panic: init::after_panic(&plan.cmdline),
            exit: plan.exit,
        };
        let boot_task = tokio::spawn(start_agent(
            userspace,
            Arc::clone(&netns),
            Arc::clone(&agent),
            ports,
        ));
        Ok(Self {
            net_tasks,
            netns,
            boot_task,
            agent,
            paused,
            runtime_dir: plan.runtime_dir,
        })
    }

    /// Pauses (`true`) or resumes the guest: the agent is stopped/continued and frames are
    /// dropped both ways.
    pub(crate) async fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if let Some(a) = self.agent.lock().await.as_ref() {
            a.signal(if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            });
        }
    }

    /// Shuts the guest down: agent stopped (and with it the work-disk mount and its loop
    /// device), both taps closed and the guest thread ended (so the kernel removes the
    /// namespace and eth0), guest sockets removed.
    pub(crate) async fn shutdown(self, ports: &GuestPorts) {
        log::serial("reboot: Restarting system (simulated shutdown)");
        self.boot_task.abort();
        let _ = self.boot_task.await;
        ports.clear();
        if let Some(agent) = self.agent.lock().await.take() {
            agent.stop().await;
        }
        for t in self.net_tasks {
            t.abort();
            // Dropping both tasks drops both taps' files: the fds are closed.
            let _ = t.await;
        }
        // The last reference: the guest thread ends, nothing holds the namespace any more.
        drop(self.netns);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        log::info("guest shut down");
    }
}

/// Prefix of the simulator's private guest directories in the temp dir.
const RUNTIME_PREFIX: &str = "banger-fcsim-";

/// This process's private guest directory (the agent's Unix socket lives there): short, so
/// socket paths stay far below the 108-byte limit, and outside `/root`, which the agent's mount
/// namespace hides.
pub(crate) fn runtime_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{RUNTIME_PREFIX}{}", std::process::id()))
}

/// Removes the guest directories of simulator processes that no longer exist (killed with
/// SIGKILL, which nothing can clean up after).
pub(crate) fn sweep_stale_runtime_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUNTIME_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            log::debug(&format!("removing stale {}", e.path().display()));
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Creates the private guest directory `dir` (in the shared temp dir) mode 0700, so the
/// agent's socket in it is reachable by this process's user only, whatever the socket's own
/// mode (the simulator runs under Firecracker's umask 000; the image's agent under 022).
///
/// The name is predictable, so a directory that already exists is used only when it is a real
/// directory (not a symlink) owned by this process's user, and is then closed to others
/// before the agent binds in it; anything else is refused.
pub(crate) fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} exists and is not a directory of this user: refusing to put the \
                         agent's socket in it",
                        dir.display()
                    ),
                ));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

/// What the guest's "init" starts the agent with.
struct Userspace {
    bin: PathBuf,
    /// The runtime directory (the agent's socket goes there).
    dir: PathBuf,
    work_disk: Option<PathBuf>,
    root_drive: Option<PathBuf>,
    slow_boot: Option<Duration>,
    hostname: String,
    /// Reboot this long after a kernel panic (`panic=N`), or hang (`None`).
    after_panic: Option<Duration>,
    exit: mpsc::UnboundedSender<Exit>,
}

async fn start_agent(
    userspace: Userspace,
    netns: Arc<GuestNetns>,
    slot: Arc<Mutex<Option<Agent>>>,
    ports: Arc<GuestPorts>,
) {
    let Userspace {
        bin,
        dir,
        work_disk,
        root_drive,
        slow_boot,
        hostname,
        after_panic,
        exit,
    } = userspace;
    if let Some(delay) = slow_boot {
        log::info(&format!("fault slow-boot: the agent starts in {delay:?}"));
        log::serial(&format!(
            "(fault slow-boot: userspace starts in {} ms)",
            delay.as_millis()
        ));
        tokio::time::sleep(delay).await;
    }
    if let Err(e) = make_private_dir(&dir) {
        log::error(&format!("creating {}: {e}", dir.display()));
        log::serial(&format!("banger-agent not started: {e}"));
        return;
    }
    let socket = dir.join(format!("agent-{AGENT_PORT}.sock"));
    // Set before the agent runs, so its socket's creation cannot be missed.
    let created = match dirwatch::DirWatch::new(&dir) {
        Ok(w) => Some(w),
        Err(e) => {
            log::debug(&format!(
                "no inotify watch on {} ({e}): looking for the agent's socket every millisecond",
                dir.display()
            ));
            None
        }
    };
    log::serial(&format!(
        "Welcome to {hostname} (simulated). Starting banger-agent..."
    ));
    let spawn_socket = socket.clone();
    // Spawned by the guest thread: in the guest network namespace, with that thread as its
    // PR_SET_PDEATHSIG parent.
    let spawned = netns
        .run(move || {
            agent::spawn(
                &bin,
                &spawn_socket,
                work_disk.as_deref(),
                root_drive.as_deref(),
            )
        })
        .await
        .and_then(|r| r);
    let agent = match spawned {
        Ok(a) => a,
        Err(e) => {
            log::error(&format!("starting the agent: {e}"));
            log::serial(&format!("banger-agent failed to start: {e}"));
            return;
        }
    };
    // Readable when the agent's process exits: a running guest then waits without waking up
    // (100 idle guests woke 2,000 times a second to look).
    let mut exit_fd = agent
        .pid()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(|p| banger_procid::PidFd::open(p).ok())
        .and_then(|fd| fd.as_fd().try_clone_to_owned().ok())
        .and_then(|owned| {
            // SAFETY: `owned` is an open descriptor that the AsyncFd takes ownership of: it
            // stays open, and `as_raw_fd` names it, until the AsyncFd is dropped.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    owned,
                    tokio::io::Interest::READABLE,
                )
            }
            .ok()
        });
    *slot.lock().await = Some(agent);
    let deadline = tokio::time::Instant::now() + AGENT_READY_TIMEOUT;
    let mut listening = false;
    // Until the agent listens, then for as long as the guest runs (shutdown aborts this task
    // before it stops the agent): an agent that exits on its own is the guest's init dying.
    let status = loop {
        if !listening && is_listening(&socket) {
            ports.listen(AGENT_PORT, socket.clone());
            log::serial(&format!(
                "banger-agent listening on vsock port {AGENT_PORT}"
            ));
            log::info("guest userspace up: agent listening");
            listening = true;
        }
        if let Some(a) = slot.lock().await.as_mut()
            && let Some(status) = a.try_exit()
        {
            break status;
        }
        if !listening && tokio::time::Instant::now() >= deadline {
            log::error("the agent did not create its socket in time");
            return;
        }
        // Until the agent listens: while its socket does not exist, wait for the directory
        // watch to say an entry was created (looking again at least every INIT_WATCH, for the
        // agent's exit and the deadline); once the socket exists (bound, maybe not listening
        // yet), or without a watch, look every millisecond: a `connect` costs microseconds,
        // and the port opens (and `vm create --wait` ends) that much sooner.
        match (&created, listening) {
            (_, true) => match exit_fd.take() {
                // It exited (or cannot be watched): the next look reaps it; should it not, the
                // loop looks every INIT_WATCH from then on, never in a busy loop.
                Some(fd) => drop(fd.readable().await),
                None => tokio::time::sleep(INIT_WATCH).await,
            },
            (Some(watch), false) if std::fs::symlink_metadata(&socket).is_err() => {
                let _ = tokio::time::timeout(INIT_WATCH, watch.changed()).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    ports.clear();
    init::report_exit(status, status.code() == Some(agent::MOUNT_FAILED_EXIT));
    init::announce_after_panic(after_panic);
    if let Some(delay) = after_panic {
        tokio::time::sleep(delay).await;
        log::info("the guest rebooted after its kernel panic: the VMM exits");
        let _ = exit.send(Exit::GuestReboot);
    }
}

fn is_listening(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_guest_directory_is_private_even_under_umask_000() {
        let d = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let made = make_private_dir(&d.path().join("g"));
        nix::sys::stat::umask(old);
        made.unwrap();
        assert_eq!(mode(&d.path().join("g")), 0o700);
    }

    #[test]
    fn an_existing_open_guest_directory_is_closed_and_a_symlink_refused() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g");
        std::fs::create_dir(&g).unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o777)).unwrap();
        make_private_dir(&g).unwrap();
        assert_eq!(mode(&g), 0o700);

        let link = d.path().join("l");
        std::os::unix::fs::symlink(&g, &link).unwrap();
        let err = make_private_dir(&link).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    }
}
