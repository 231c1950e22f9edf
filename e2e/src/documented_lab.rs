//! The lab exactly as `docs/lab.md` sets it up, on three network namespaces (`lab-a`,
//! `lab-b`, `lab-c`, the docs' own host names) on one lab bridge.
//!
//! Nothing is written by hand that the docs do not write: the NATS configs, passwords, service
//! logins and CLI configs come from `scripts/lab-init`, run with the command line `docs/lab.md`
//! shows (read from the page itself, with the output directory and `--store-dir` changed so
//! the three nodes, which share this machine's filesystem, keep their own stores in a
//! temporary directory). nats-server runs on the generated files as they are, with
//! `passwords.env` as its environment (the unit's `EnvironmentFile`). Each service runs with
//! its host's `banger.toml` as lab.md writes it (every node's URL, its own first) and its
//! `services/<role>.env` as its environment; the only keys added are those a test must set:
//! its own state and runtime directories and the simulator. The CLI is the operator's
//! `cli/operator.toml`, installed as `~/.config/banger/config.toml`.
//!
//! The host names resolve through each namespace's own `/etc/hosts` (`ip netns exec` mounts
//! `/etc/netns/<namespace>/hosts` over it), so the configs keep the docs' names.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use banger_testkit::netns::NetNs;
use banger_testkit::{Process, bin_path, http_get, wait_until_blocking};

use crate::{kill_processes_mentioning, text};

/// The docs' host names.
pub const HOSTS: [&str; 3] = ["lab-a", "lab-b", "lab-c"];
/// The hosts' addresses on the lab bridge: 10.98.0.<n>.
const LAN_PREFIX: [u8; 3] = [10, 98, 0];
/// The lab range of the docs' banger.toml.
pub const LAB_RANGE: &str = "10.77.0.0/16";
/// Where dnsd listens in the docs' lab (every address of its host, the DNS port).
pub const DNS_LISTEN: &str = "0.0.0.0:53";
/// nats-server's monitoring port in the configs.
const MONITOR: &str = "127.0.0.1:8222";
/// How long the cluster and the services get to come up.
const START_WAIT: Duration = Duration::from_secs(90);

/// One host.
pub struct DocHost {
    /// Host id and name (`lab-a`, ...).
    pub id: &'static str,
    /// Its address on the lab bridge.
    pub addr: Ipv4Addr,
    services: Vec<Process>,
    nats: Option<Process>,
    /// `/etc/netns/<namespace>`, removed on drop.
    etc: PathBuf,
    /// Its namespace (declared last: dropped after the processes in it).
    pub ns: NetNs,
}

/// The documented lab.
pub struct DocumentedLab {
    /// The hosts, `lab-a` first.
    pub hosts: Vec<DocHost>,
    /// The namespace holding the lab bridge.
    pub lan: NetNs,
    /// Root of every file of the lab.
    pub dir: PathBuf,
    /// What `scripts/lab-init` wrote.
    pub init: PathBuf,
}

/// The `scripts/lab-init` command line of `docs/lab.md`, split into arguments.
///
/// # Panics
/// When the page shows no such command.
pub fn documented_lab_init() -> Vec<String> {
    let page = repo().join("docs/lab.md");
    let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{page:?}: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("scripts/lab-init "))
        .unwrap_or_else(|| panic!("docs/lab.md shows no `scripts/lab-init` command"));
    line.split('#')
        .next()
        .unwrap_or(line)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `KEY=value` lines of an environment file (comments and blank lines skipped).
///
/// # Panics
/// When the file cannot be read.
pub fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

impl DocumentedLab {
    /// Builds the namespaces, runs the documented `lab-init`, starts the three nats-servers on
    /// its files and waits until each has routes to both others.
    ///
    /// # Panics
    /// When any step fails (what was built is torn down).
    #[allow(
        clippy::unwrap_used,
        reason = "a fixture that cannot be built fails the test"
    )]
    pub fn start_cluster() -> Self {
        let lan = NetNs::create("dl");
        lan.exec(&["ip", "link", "add", "lab", "type", "bridge"]);
        lan.exec(&["ip", "link", "set", "lab", "up"]);
        let dir = std::env::temp_dir().join(format!("banger-doclab-{}", lan.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let init = dir.join("etc-banger");
        let mut lab = Self {
            hosts: Vec::new(),
            lan,
            dir,
            init,
        };
        let hosts_file: String = HOSTS
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{} {h}\n", addr_of(i)))
            .collect();
        for (i, id) in HOSTS.iter().enumerate() {
            let ns = NetNs::create(&format!("d{}", i + 1));
            let etc = PathBuf::from("/etc/netns").join(ns.name());
            let addr = addr_of(i);
            let host = DocHost {
                id,
                addr,
                services: Vec::new(),
                nats: None,
                etc,
                ns,
            };
            std::fs::create_dir_all(&host.etc).unwrap();
            std::fs::write(
                host.etc.join("hosts"),
                format!("127.0.0.1 localhost\n{hosts_file}"),
            )
            .unwrap();
            let side = format!("vd{}", i + 1);
            host.ns.exec(&[
                "ip",
                "link",
                "add",
                "lab0",
                "type",
                "veth",
                "peer",
                "name",
                &side,
                "netns",
                lab.lan.name(),
            ]);
            host.ns
                .exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "lab0"]);
            host.ns.exec(&["ip", "link", "set", "lab0", "up"]);
            lab.lan.exec(&["ip", "link", "set", &side, "master", "lab"]);
            lab.lan.exec(&["ip", "link", "set", &side, "up"]);
            lab.hosts.push(host);
        }
        lab.lab_init();
        for i in 0..lab.hosts.len() {
            lab.start_nats(i);
        }
        for (i, id) in HOSTS.iter().enumerate() {
            wait_until_blocking(
                &format!("{id}'s node to have routes to both others"),
                START_WAIT,
                || lab.num_routes(i) == Some(2),
            );
        }
        lab
    }

    /// Runs the documented `scripts/lab-init` into [`Self::init`].
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    fn lab_init(&self) {
        let argv = documented_lab_init();
        let mut cmd = Command::new(repo().join(&argv[0]));
        // argv[1] is the page's output directory (/etc/banger): ours instead.
        cmd.arg(&self.init)
            .args(&argv[2..])
            .arg("--store-dir")
            .arg(self.dir.join("jetstream"));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "lab-init: {}", text(&out));
    }

    /// `passwords.env`, nats-server's environment.
    pub fn nats_env(&self) -> Vec<(String, String)> {
        env_file(&self.init.join("nats/passwords.env"))
    }

    #[allow(clippy::unwrap_used, reason = "test fixture")]
    fn start_nats(&mut self, i: usize) {
        let conf = self
            .init
            .join("nats")
            .join(format!("lab-cluster-{}.conf", HOSTS[i]));
        assert!(conf.is_file(), "lab-init wrote no {conf:?}");
        let mut cmd = self.hosts[i].ns.command("nats-server");
        cmd.arg("-c").arg(&conf).envs(self.nats_env());
        log_to(
            &mut cmd,
            &self.dir.join(format!("{}-nats-server.log", HOSTS[i])),
        );
        self.hosts[i].nats = Some(Process::spawn("nats-server", cmd));
    }

    /// The number of routes host `i`'s node has, from its monitoring port.
    pub fn num_routes(&self, i: usize) -> Option<u64> {
        let body = self.hosts[i].ns.run(|| http_get(MONITOR, "/varz"))?;
        // `"routes": 2,` — no JSON parser needed for one number.
        body.lines()
            .find_map(|l| l.trim().strip_prefix("\"routes\": "))
            .and_then(|rest| rest.trim_end_matches(',').parse().ok())
    }

    /// The replicas of JetStream stream `stream` as the nodes' monitoring ports report it
    /// (`/jsz`: a node lists the streams it holds a replica of); `None` when no node has it.
    pub fn stream_replicas(&self, stream: &str) -> Option<u64> {
        (0..self.hosts.len())
            .filter_map(|i| {
                let body = self.hosts[i]
                    .ns
                    .run(|| http_get(MONITOR, "/jsz?accounts=true&streams=true&config=true"))?;
                crate::jsz_stream(&body, stream)?["config"]["num_replicas"].as_u64()
            })
            .max()
    }

    /// nats-server's log on host `i`.
    pub fn nats_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}-nats-server.log", HOSTS[i])))
            .unwrap_or_default()
    }

    /// Host `i`'s `/etc/banger/banger.toml`: lab.md's file for that host, plus what a test
    /// must set (its own state and runtime directories, the simulator, dnsd's listener).
    pub fn banger_toml(&self, i: usize) -> PathBuf {
        self.dir.join(HOSTS[i]).join("banger.toml")
    }

    /// Writes host `i`'s banger.toml and starts its services (stord, netd, vm-controller, and
    /// dnsd on `lab-a`), each with its `services/<role>.env`.
    ///
    /// # Panics
    /// When a file cannot be written.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn start_services(&mut self, i: usize) {
        let id = HOSTS[i];
        let own = self.dir.join(id);
        std::fs::create_dir_all(&own).unwrap();
        // lab.md: this host's node first; the others let the client fail over.
        let mut urls = vec![format!("\"nats://{id}:4222\"")];
        urls.extend(
            HOSTS
                .iter()
                .filter(|h| **h != id)
                .map(|h| format!("\"nats://{h}:4222\"")),
        );
        let config = format!(
            "host_id = \"{id}\"\n\
             # test only: its own directories\n\
             state_dir = {state:?}\nruntime_dir = {run:?}\n\n\
             [nats]\nurls = [{urls}]\nrequire_auth = true\n\n\
             [netd]\nlab_range = \"{LAB_RANGE}\"\nsubnet_bucket_replicas = 3\n\n\
             [dnsd]\nlisten = [\"{DNS_LISTEN}\"]\n\n\
             # test only: VMs under the simulator\n\
             [vm-controller]\nvmm = \"sim\"\n",
            state = own.join("state").display().to_string(),
            run = own.join("run").display().to_string(),
            urls = urls.join(", "),
        );
        std::fs::write(self.banger_toml(i), config).unwrap();
        let mut names = vec!["stord", "netd", "vm-controller"];
        if i == 0 {
            names.push("dnsd");
        }
        for name in names {
            let program = format!("banger-{name}");
            let mut cmd = self.hosts[i]
                .ns
                .command(&bin_path(&program).to_string_lossy());
            cmd.arg("--config")
                .arg(self.banger_toml(i))
                .env_remove("BANGER_CONFIG")
                .env("RUST_LOG", "info")
                .envs(env_file(
                    &self.init.join("services").join(format!("{name}.env")),
                ));
            log_to(&mut cmd, &own.join(format!("{name}.log")));
            let p = Process::spawn(&program, cmd);
            self.hosts[i].services.push(p);
        }
    }

    /// A `banger` command run on host `i` with the operator's CLI config as lab.md installs it
    /// (`~/.config/banger/config.toml`).
    ///
    /// # Panics
    /// When the config cannot be installed.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn command(&self, i: usize) -> Command {
        let xdg = self.dir.join(HOSTS[i]).join("xdg");
        let installed = xdg.join("banger/config.toml");
        if !installed.exists() {
            std::fs::create_dir_all(xdg.join("banger")).unwrap();
            std::fs::copy(self.init.join("cli/operator.toml"), &installed).unwrap();
        }
        let mut cmd = self.hosts[i]
            .ns
            .command(&bin_path("banger").to_string_lossy());
        cmd.env("XDG_CONFIG_HOME", &xdg)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "error")
            .env_remove("BANGER_CONFIG")
            .env_remove("BANGER_NATS_URL")
            .env_remove("BANGER_NATS_USER")
            .env_remove("BANGER_NATS_PASSWORD");
        cmd
    }

    /// Runs `banger ARGS` on host `i`.
    ///
    /// # Panics
    /// When the binary cannot be run.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn banger(&self, i: usize, args: &[&str]) -> Output {
        self.command(i).args(args).output().unwrap()
    }

    /// Runs `banger ARGS` on host `i` and asserts success; returns stdout.
    ///
    /// # Panics
    /// When the command fails.
    pub fn banger_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.banger(i, args);
        assert!(
            out.status.success(),
            "banger {} on {} failed ({:?}):\n{}",
            args.join(" "),
            HOSTS[i],
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every service of every host answers a ping from `lab-a`.
    pub fn wait_for_services(&self) {
        for (i, h) in HOSTS.iter().enumerate() {
            let mut services = vec!["stord", "netd", "vm-controller"];
            if i == 0 {
                services.push("dnsd");
            }
            for svc in services {
                wait_until_blocking(&format!("{svc} on {h} to answer"), START_WAIT, || {
                    self.banger(0, &["ping", svc, "--host", h]).status.success()
                });
            }
        }
        crate::wait_until_lab_settled(HOSTS.len(), START_WAIT, || {
            self.hosts[0]
                .ns
                .run(|| http_get(MONITOR, "/jsz?accounts=true&streams=true"))
        });
    }

    /// Takes host `i`'s link to the lab down, as a pulled cable would.
    pub fn cut(&self, i: usize) {
        self.lan
            .exec(&["ip", "link", "set", &format!("vd{}", i + 1), "down"]);
    }

    /// Brings host `i`'s link back.
    pub fn reconnect(&self, i: usize) {
        self.lan
            .exec(&["ip", "link", "set", &format!("vd{}", i + 1), "up"]);
    }

    /// The last lines of service `name`'s log on host `i` (for failure messages).
    pub fn log_tail(&self, i: usize, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(HOSTS[i]).join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn addr_of(i: usize) -> Ipv4Addr {
    let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
    Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], LAN_PREFIX[2], n)
}

impl Drop for DocumentedLab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            for mut p in h.services.drain(..).rev() {
                p.terminate(Duration::from_secs(10));
            }
        }
        kill_processes_mentioning(&self.dir);
        for h in &mut self.hosts {
            if let Some(mut n) = h.nats.take() {
                n.kill();
            }
            let _ = std::fs::remove_dir_all(&h.etc);
        }
        if std::thread::panicking() {
            crate::lab::keep_logs(&self.dir);
        }
        self.hosts.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_to(cmd: &mut Command, path: &Path) {
    if let Ok(out) = File::create(path)
        && let Ok(err) = out.try_clone()
    {
        cmd.stdout(out).stderr(err);
    }
}
