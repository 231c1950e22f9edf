//! A private Docker daemon for the compose test: Debian's `dockerd` and `containerd`, started
//! inside a private network namespace with their own data and runtime directories and socket.
//!
//! The namespace is what isolates the compose stack: compose.yaml runs every service with the
//! host network, and "host" for a container is the network namespace of the containerd that
//! starts it. Started inside the test's namespace, the stack's bridge (banger0), nftables
//! table, bus port 4222 and DNS port 42069 are the namespace's, never the machine's, and never
//! those of another test. containerd is started here too, explicitly: a dockerd given none
//! would use a system containerd when one runs, whose containers live in the host's namespace.
//! Docker's own iptables rules (FORWARD policy DROP) land in the namespace as well.
//!
//! Dropping a [`PrivateDocker`] stops both daemons and removes their directories.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::Process;
use banger_testkit::netns::NetNs;

/// Debian's binaries, called by path: another `docker` may come first on PATH (a client-only
/// install in /usr/local/bin), and the test must use the daemon it installed.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The Docker client from Debian's docker.io.
pub const DOCKER: &str = "/usr/bin/docker";
/// Debian bookworm's compose (v1, Python); used when the client has no `compose` plugin.
pub const DOCKER_COMPOSE_V1: &str = "/usr/bin/docker-compose";
/// containerd from Debian's containerd package (a dependency of docker.io).
pub const CONTAINERD: &str = "/usr/bin/containerd";

/// How long the daemons may take to answer after they start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian packages the compose test installs when they are missing: the daemon and its
/// client, compose, and what `scripts/docker-rootfs` copies into the image (a static busybox,
/// iptables).
pub const PACKAGES: &[&str] = &["docker.io", "docker-compose", "busybox-static", "iptables"];

/// Installs the missing [`PACKAGES`] with apt-get; `Err` says why that was not possible.
///
/// # Errors
/// When apt-get cannot install them (no network, not Debian).
pub fn install_packages() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let ok = |o: &std::io::Result<Output>| o.as_ref().is_ok_and(|o| o.status.success());
    let mut out = install();
    if !ok(&out) {
        let _ = Command::new("apt-get").args(["update", "-q"]).output();
        out = install();
    }
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "apt-get install {} failed: {}",
            missing.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("apt-get could not run: {e}")),
    }
}

/// dockerd and containerd inside `ns`, stopped on drop.
pub struct PrivateDocker {
    dir: PathBuf,
    dockerd: Option<Process>,
    containerd: Option<Process>,
}

impl PrivateDocker {
    /// Starts containerd, then dockerd, inside `ns`, with everything under `dir`, and waits
    /// until the daemon answers. `Err` carries the reason Docker cannot run here (with the end
    /// of the daemon's log).
    ///
    /// # Errors
    /// When a daemon exits or does not answer within a minute.
    ///
    /// # Panics
    /// When `dir` cannot be made.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn start(ns: &NetNs, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let mut docker = Self {
            dir: dir.to_owned(),
            dockerd: None,
            containerd: None,
        };
        // Empty configs: nothing from /etc/containerd or /etc/docker applies.
        std::fs::write(dir.join("containerd.toml"), "version = 2\n").unwrap();
        std::fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let mut c = nsenter(ns, CONTAINERD);
        c.arg("--config")
            .arg(dir.join("containerd.toml"))
            .arg("--address")
            .arg(docker.containerd_socket())
            .arg("--root")
            .arg(dir.join("containerd"))
            .arg("--state")
            .arg(dir.join("run/containerd"));
        docker.containerd = Some(spawn_logged("containerd", c, &dir.join("containerd.log")));
        let socket = docker.containerd_socket();
        docker.wait_for("containerd", || socket.exists())?;

        // `ip netns exec` would remount /sys and hide the cgroup mounts dockerd needs; nsenter
        // enters the network namespace only.
        let mut d = nsenter(ns, DOCKERD);
        d.arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--containerd")
            .arg(docker.containerd_socket())
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("run/docker"))
            .arg("--pidfile")
            .arg(dir.join("run/docker.pid"))
            .arg("--host")
            .arg(docker.host())
            .args(["--storage-driver", "overlay2"]);
        docker.dockerd = Some(spawn_logged("dockerd", d, &dir.join("dockerd.log")));
        let host = docker.host();
        docker.wait_for("dockerd", || {
            Command::new(DOCKER)
                .env("DOCKER_HOST", &host)
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        Ok(docker)
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            let proc = if what == "dockerd" {
                self.dockerd.as_mut()
            } else {
                self.containerd.as_mut()
            };
            let exited = proc.is_some_and(|p| !p.is_running());
            if exited || Instant::now() >= end {
                let log = std::fs::read_to_string(self.dir.join(format!("{what}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "{what} {} here; its log ends:\n{}",
                    if exited {
                        "exited at start-up"
                    } else {
                        "did not answer within a minute"
                    },
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("run/containerd.sock")
    }

    /// The daemon's address, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("run/docker.sock").display())
    }

    /// The daemon's data root (volumes live under it).
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A `docker` command against this daemon.
    pub fn docker(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", self.host());
        c
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        // dockerd stops its containers (10 s each at most) before it exits.
        if let Some(mut d) = self.dockerd.take() {
            d.terminate(Duration::from_secs(60));
        }
        if let Some(mut c) = self.containerd.take() {
            c.terminate(Duration::from_secs(20));
        }
        // Overlay mounts left by a daemon that had to be killed would keep the files busy.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|p| p.starts_with(root.as_str()))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nsenter(ns: &NetNs, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/var/run/netns/{}", ns.name()))
        .arg(program);
    c
}

#[allow(clippy::unwrap_used, reason = "test fixture")]
fn spawn_logged(name: &str, mut cmd: Command, log: &Path) -> Process {
    let out = File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    Process::spawn(name, cmd)
}

/// How to run compose here: the `docker compose` plugin when the client has one, else
/// Debian's `docker-compose` (v1).
#[derive(Debug, Clone)]
pub struct Compose {
    argv: Vec<String>,
    /// `docker compose` (v2) or `docker-compose` (v1), for messages.
    pub flavour: String,
}

impl Compose {
    /// Finds a compose that works with Debian's client, or says why there is none.
    ///
    /// # Errors
    /// When neither is installed.
    pub fn find() -> Result<Self, String> {
        let plugin = Command::new(DOCKER)
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if plugin {
            return Ok(Self {
                argv: vec![DOCKER.into(), "compose".into()],
                flavour: "docker compose".into(),
            });
        }
        if Path::new(DOCKER_COMPOSE_V1).is_file() {
            return Ok(Self {
                argv: vec![DOCKER_COMPOSE_V1.into()],
                flavour: "docker-compose (v1)".into(),
            });
        }
        Err("neither `docker compose` nor docker-compose is installed".into())
    }

    /// A compose command for project `project` of `file`, against `docker`.
    pub fn command(&self, docker: &PrivateDocker, project: &str, file: &Path) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..])
            .env("DOCKER_HOST", docker.host())
            .arg("--project-name")
            .arg(project)
            .arg("--file")
            .arg(file);
        c
    }
}
