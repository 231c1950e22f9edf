//! A lab of several banger hosts built from network namespaces, for the lab-mode tests.
//!
//! ```text
//!            lab namespace: bridge "lab"  (the hosts' LAN)
//!         ┌───────────────┬───────────────┬───────────────┐
//!     veth h1         veth h2         veth h3
//!   host h1 10.99.0.1  host h2 10.99.0.2  host h3 10.99.0.3
//!   nats-server ──────── nats-server ──────── nats-server   (one cluster, JetStream R3)
//!   stord netd vm-controller (+ dnsd on h1)   VMs under the simulator
//! ```
//!
//! Every host is a namespace of its own with its own nats-server (a node of one cluster over
//! the lab bridge), state and runtime directories, and its own `stord`, `netd` (subnet
//! allocated from the lab range) and `vm-controller` (the Firecracker simulator); `dnsd`
//! runs on the first host only. [`Lab::cut`] takes a host's link down on the lab side, as a
//! pulled cable would. Dropping the lab stops every process (services, VMs, servers) and
//! deletes the namespaces and files, also after a failed assertion.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use banger_testkit::netns::NetNs;
use banger_testkit::{Process, bin_path, http_get_ok, wait_until_blocking};

use crate::{kill_processes_mentioning, text};

/// The hosts' addresses on the lab bridge: 10.99.0.<n>.
const LAN_PREFIX: [u8; 3] = [10, 99, 0];
/// The range every host's VM subnet is allocated from.
pub const LAB_RANGE: &str = "10.77.0.0/16";
/// Client, cluster and monitoring ports of every node (each host has its own port space).
const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;
/// Where dnsd listens on the first host.
pub const DNS_PORT: u16 = 42069;
/// How long the cluster and the services get to come up.
const START_WAIT: Duration = Duration::from_secs(90);

/// One host of the lab.
pub struct LabHost {
    /// Host id (`h1`, ...).
    pub id: String,
    /// Its address on the lab bridge.
    pub addr: Ipv4Addr,
    /// Its services, stopped (SIGTERM) before its nats-server on drop.
    services: Vec<Process>,
    nats: Option<Process>,
    /// Its namespace (declared last: dropped after the processes in it).
    pub ns: NetNs,
}

/// A lab of `n` hosts.
pub struct Lab {
    /// The hosts, `h1` first.
    pub hosts: Vec<LabHost>,
    /// The namespace holding the lab bridge.
    pub lan: NetNs,
    /// Root of every file of the lab.
    pub dir: PathBuf,
}

impl LabHost {
    fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.id)
    }
}

impl Lab {
    /// Builds the namespaces and the bridge, starts the NATS cluster and waits until every node
    /// is healthy, then starts the services and waits until each answers `$SRV.PING`.
    ///
    /// # Panics
    /// When any step fails (the lab built so far is torn down).
    #[allow(
        clippy::unwrap_used,
        reason = "a fixture that cannot be built fails the test"
    )]
    pub fn start(n: u8) -> Self {
        let lan = NetNs::create("lan");
        lan.exec(&["ip", "link", "add", "lab", "type", "bridge"]);
        lan.exec(&["ip", "link", "set", "lab", "up"]);
        let dir = std::env::temp_dir().join(format!("banger-lab-{}", lan.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Self {
            hosts: Vec::new(),
            lan,
            dir,
        };
        for i in 1..=n {
            let ns = NetNs::create(&format!("h{i}"));
            let addr = Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], LAN_PREFIX[2], i);
            let side = format!("vh{i}");
            ns.exec(&[
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
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "lab0"]);
            ns.exec(&["ip", "link", "set", "lab0", "up"]);
            // nats-server 2.9 pings a route only when it has been idle, and a route to a cut
            // host is never idle (raft heartbeats go out all the time), so the cut is noticed
            // when TCP gives up on the unacknowledged data: after ~15 minutes by default,
            // after ~6 s with 4 retries (a setting of each host's namespace).
            ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_retries2=4"]);
            lab.lan.exec(&["ip", "link", "set", &side, "master", "lab"]);
            lab.lan.exec(&["ip", "link", "set", &side, "up"]);
            lab.hosts.push(LabHost {
                id: format!("h{i}"),
                addr,
                services: Vec::new(),
                nats: None,
                ns,
            });
        }
        for i in 0..lab.hosts.len() {
            lab.start_nats(i);
        }
        for h in &lab.hosts {
            wait_until_blocking(
                &format!("nats-server of {} to be healthy", h.id),
                START_WAIT,
                || {
                    h.ns.run(|| http_get_ok(&format!("127.0.0.1:{MONITOR_PORT}"), "/healthz"))
                },
            );
        }
        for i in 0..lab.hosts.len() {
            lab.write_config(i);
            lab.start_services(i);
        }
        for h in &lab.hosts {
            let mut services = vec!["stord", "netd", "vm-controller"];
            if h.id == "h1" {
                services.push("dnsd");
            }
            for svc in services {
                wait_until_blocking(&format!("{svc} on {} to answer", h.id), START_WAIT, || {
                    lab.banger(0, &["ping", svc, "--host", &h.id])
                        .status
                        .success()
                });
            }
        }
        crate::wait_until_lab_settled(lab.hosts.len(), START_WAIT, || {
            lab.monitor(0, "/jsz?accounts=true&streams=true")
        });
        lab
    }

    fn nats_url(&self, i: usize) -> String {
        format!("nats://{}:{CLIENT_PORT}", self.hosts[i].addr)
    }

    #[allow(clippy::unwrap_used, reason = "test fixture")]
    fn start_nats(&mut self, i: usize) {
        let dir = self.hosts[i].dir(&self.dir);
        std::fs::create_dir_all(dir.join("jetstream")).unwrap();
        let routes: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("nats-route://{}:{CLUSTER_PORT}", h.addr))
            .collect();
        // Short pings, so a node notices a cut link within seconds (not the default two
        // minutes) and reconnects its routes when the link returns.
        let conf = format!(
            "server_name: {id}\nlisten: \"0.0.0.0:{CLIENT_PORT}\"\n\
             http: \"127.0.0.1:{MONITOR_PORT}\"\nping_interval: \"1s\"\nping_max: 3\n\
             max_payload: 8MB\n\
             jetstream {{ store_dir: {store:?} }}\n\
             cluster {{\n  name: banger-lab\n  listen: \"0.0.0.0:{CLUSTER_PORT}\"\n  \
             routes: [{routes}]\n}}\n",
            id = self.hosts[i].id,
            store = dir.join("jetstream").display().to_string(),
            routes = routes.join(", "),
        );
        let path = dir.join("nats.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = self.hosts[i].ns.command("nats-server");
        cmd.arg("-c").arg(&path);
        log_to(&mut cmd, &dir.join("nats-server.log"));
        self.hosts[i].nats = Some(Process::spawn("nats-server", cmd));
    }

    #[allow(clippy::unwrap_used, reason = "test fixture")]
    fn write_config(&self, i: usize) {
        let h = &self.hosts[i];
        let dir = h.dir(&self.dir);
        // Discovery every second and a short expiry, so routes follow a cut and a return
        // quickly; three KV replicas, so the cluster's two other nodes keep the claims
        // readable while one host is cut off.
        let config = format!(
            "host_id = \"{id}\"\nstate_dir = {state:?}\nruntime_dir = {run:?}\n\n\
             [nats]\nurls = [\"{url}\"]\n\n\
             [netd]\nbridge = \"bl{id}\"\nlab_range = \"{LAB_RANGE}\"\nsubnet_prefix = 24\n\
             subnet_bucket_replicas = 3\npeer_interval_secs = 1\npeer_expiry_secs = 5\n\n\
             [vm-controller]\nvmm = \"sim\"\n\n\
             [dnsd]\nlisten = [\"127.0.0.1:{DNS_PORT}\"]\nrebuild_interval_secs = 2\n\
             gather_timeout_ms = 1000\n",
            id = h.id,
            state = dir.join("state").display().to_string(),
            run = dir.join("run").display().to_string(),
            url = self.nats_url(i),
        );
        std::fs::write(dir.join("banger.toml"), config).unwrap();
    }

    fn start_services(&mut self, i: usize) {
        let dir = self.hosts[i].dir(&self.dir);
        let mut names = vec!["stord", "netd", "vm-controller"];
        if i == 0 {
            names.push("dnsd");
        }
        for name in names {
            let program = format!("banger-{name}");
            let bin = bin_path(&program);
            let mut cmd = self.hosts[i].ns.command(&bin.to_string_lossy());
            cmd.arg("--config")
                .arg(dir.join("banger.toml"))
                .env("RUST_LOG", "info");
            log_to(&mut cmd, &dir.join(format!("{name}.log")));
            let p = Process::spawn(&program, cmd);
            self.hosts[i].services.push(p);
        }
    }

    /// A `banger` command run on host `i` (its namespace, its node, its host id).
    pub fn command(&self, i: usize) -> Command {
        let h = &self.hosts[i];
        let dir = h.dir(&self.dir);
        let mut cmd = h.ns.command(&bin_path("banger").to_string_lossy());
        cmd.arg("--config")
            .arg(dir.join("banger.toml"))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            // The CLI's own config file must not leak in from the machine running the test.
            .env("XDG_CONFIG_HOME", dir.join("xdg"));
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

    /// Runs `banger ARGS` on host `i`, asserts success, returns stdout.
    ///
    /// # Panics
    /// When the command fails (the panic shows its output).
    pub fn banger_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.banger(i, args);
        assert!(
            out.status.success(),
            "banger {} on {} failed ({:?}):\n{}",
            args.join(" "),
            self.hosts[i].id,
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers image `name` on every host (one stand-in kernel and one small ext4 root,
    /// shared: the hosts share the machine's filesystem).
    ///
    /// # Panics
    /// When the files cannot be made or a registration fails.
    #[allow(clippy::unwrap_used, reason = "test fixture")]
    pub fn register_image(&self, name: &str) {
        let dir = self.dir.join("image").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (kernel, rootfs) = crate::stand_in_image_files(&dir);
        for h in &self.hosts {
            self.banger_ok(
                0,
                &[
                    "image",
                    "register",
                    name,
                    "--kernel",
                    kernel.to_str().unwrap(),
                    "--rootfs",
                    rootfs.to_str().unwrap(),
                    "--host",
                    &h.id,
                ],
            );
        }
    }

    /// Takes host `i`'s link to the lab down (on the lab side: the host sees its carrier go).
    pub fn cut(&self, i: usize) {
        self.lan
            .exec(&["ip", "link", "set", &format!("vh{}", i + 1), "down"]);
    }

    /// Brings host `i`'s link back.
    pub fn reconnect(&self, i: usize) {
        self.lan
            .exec(&["ip", "link", "set", &format!("vh{}", i + 1), "up"]);
    }

    /// The body of `GET path` on host `i`'s NATS monitoring port (`/routez`, `/jsz`, ...), when
    /// it answers.
    pub fn monitor(&self, i: usize, path: &str) -> Option<String> {
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let response = self.hosts[i].ns.run(move || {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", MONITOR_PORT)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        })?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.").then(|| body.to_owned())
    }

    /// Addresses of the cluster nodes host `i`'s node has a route to (from `/routez`).
    pub fn routes_of(&self, i: usize) -> Vec<String> {
        let Some(body) = self.monitor(i, "/routez") else {
            return Vec::new();
        };
        // `"ip": "10.99.0.2",` — one per route; no JSON parser needed for that.
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("\"ip\": \""))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    }

    /// The last lines of service `name`'s log on host `i` (for failure messages).
    pub fn log_tail(&self, i: usize, name: &str) -> String {
        let path = self.hosts[i].dir(&self.dir).join(format!("{name}.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Services first (SIGTERM: netd removes its routes), then whatever they left running
        // (the simulated VMs), then the servers; the namespaces go with the hosts.
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
        }
        if std::thread::panicking() {
            keep_logs(&self.dir);
        }
        self.hosts.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// After a failed test: copies every `*.log` under `dir` (its own and each host
/// directory's) to a directory that outlives the lab (`<dir>-logs`), and says where, so the
/// failure can be read after the fact.
pub(crate) fn keep_logs(dir: &Path) {
    let kept = PathBuf::from(format!("{}-logs", dir.display()));
    let is_log = |p: &Path| p.extension().is_some_and(|e| e == "log");
    let copy = |from: &Path, to: &Path| {
        if std::fs::create_dir_all(to).is_ok()
            && let Some(name) = from.file_name()
        {
            let _ = std::fs::copy(from, to.join(name));
        }
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_log(&path) {
            copy(&path, &kept);
            continue;
        }
        let Ok(files) = std::fs::read_dir(&path) else {
            continue;
        };
        for f in files.flatten() {
            let file = f.path();
            if is_log(&file) {
                copy(&file, &kept.join(entry.file_name()));
            }
        }
    }
    eprintln!("the lab's logs are kept in {}", kept.display());
}

fn log_to(cmd: &mut Command, path: &Path) {
    if let Ok(out) = File::create(path)
        && let Ok(err) = out.try_clone()
    {
        cmd.stdout(out).stderr(err);
    }
}
