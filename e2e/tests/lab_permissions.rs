//! The lab's nats-server configs (`docs/nats/`): they parse, the real services run with their
//! role's credentials, the subject permissions really deny what a role must not do, and the
//! three cluster configs form one cluster.
//!
//! The configs are used as written, with one change: `jetstream { store_dir }` points into the
//! test's temporary directory instead of `/var/lib/banger/nats` (and, for the cluster, the
//! route port is a free one). Client and monitoring ports come from the command line (`-p`,
//! `-m`), which override the file; the route URLs come from the environment, as in a lab.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::stream::StorageType;
use async_nats::{ConnectOptions, Event, ServerError};
use banger_bus::Bus;
use banger_bus::kv::{self, BucketSpec, LabReplicas};
use banger_testkit::netns::NetNs;
use banger_testkit::{
    Process, bin_path, free_port, have_program, http_get_ok, require_root, skip, wait_until,
    wait_until_blocking,
};
use futures::StreamExt;
use tokio::sync::mpsc;

/// The server configs (the other files in docs/nats are fragments they include).
const SERVER_CONFIGS: &[&str] = &[
    "lab-single.conf",
    "lab-cluster-a.conf",
    "lab-cluster-b.conf",
    "lab-cluster-c.conf",
];

/// The fragments the server configs include.
const FRAGMENTS: &[&str] = &["users.conf", "permissions.conf"];

/// The store dir the configs name, replaced by a temporary one in tests.
const STORE_DIR_LINE: &str = "store_dir: /var/lib/banger/nats";

/// Each role's password variable (nats-server reads them from the environment).
const PASSWORDS: &[(&str, &str)] = &[
    ("BANGER_PW_VM_CONTROLLER", "pw-vm-controller"),
    ("BANGER_PW_NETD", "pw-netd"),
    ("BANGER_PW_STORD", "pw-stord"),
    ("BANGER_PW_DNSD", "pw-dnsd"),
    ("BANGER_PW_CLI", "pw-cli"),
    ("BANGER_PW_VIEWER", "pw-viewer"),
    ("BANGER_PW_ROUTE", "pw-route"),
];

/// The route URL variables the cluster configs name (placeholders where no route is dialled).
const ROUTE_VARS: &[&str] = &[
    "BANGER_ROUTE_LAB_A",
    "BANGER_ROUTE_LAB_B",
    "BANGER_ROUTE_LAB_C",
];

/// Route URLs for configs whose routes are not dialled in a test (distinct: nats-server
/// refuses a duplicate route).
fn placeholder_routes() -> Vec<(String, String)> {
    ROUTE_VARS
        .iter()
        .zip(1..)
        .map(|(v, port)| ((*v).to_owned(), format!("nats-route://127.0.0.1:{port}")))
        .collect()
}

/// The cluster configs' route port, replaced by a free one in tests.
const CLUSTER_LISTEN_LINE: &str = "listen: 0.0.0.0:6222";

const HOST: &str = "h1";
const VM_ID: &str = "0123456789abcdef0123456789abcdef";

/// How long a permission violation may take to come back from the server.
const VIOLATION_WAIT: Duration = Duration::from_secs(5);
/// How long a message may take to reach a subscriber on the same server.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);
/// One attempt while interest crosses the routes of a cluster.
const SHORT: Duration = Duration::from_millis(200);

fn docs_nats() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/nats")
}

fn password(user: &str) -> &'static str {
    let var = format!("BANGER_PW_{}", user.to_uppercase().replace('-', "_"));
    PASSWORDS
        .iter()
        .find(|(v, _)| *v == var)
        .map(|(_, p)| *p)
        .unwrap()
}

fn nats_server_here() -> bool {
    if have_program("nats-server") {
        true
    } else {
        skip("nats-server is not installed");
        false
    }
}

/// A nats-server started from one of the lab configs.
struct LabServer {
    port: u16,
    monitor: u16,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl LabServer {
    /// Copies `config` and its fragments into a temporary dir (the store dir rewritten into
    /// it) and starts nats-server from it on free ports, with `extra` arguments. Does not wait
    /// for readiness (a cluster node is only healthy once its peers run): see [`Self::ready`].
    fn spawn(config: &str, extra: &[String]) -> Self {
        Self::spawn_with_tls(config, extra, None)
    }

    /// Node `config` of the cluster: its route port `cluster_port`, its peers' route URLs in
    /// `routes` (`BANGER_ROUTE_*` variables, as passwords.env holds them), its log in `log`.
    fn spawn_node(
        config: &str,
        cluster_port: u16,
        routes: &[(String, String)],
        log: &Path,
    ) -> Self {
        Self::start(config, &[], None, Some(cluster_port), routes, Some(log))
    }

    /// Like [`Self::spawn`]; with `tls`, the config's commented top-level `tls { }` block is
    /// uncommented and its `/etc/banger/tls/` paths point into `tls`.
    fn spawn_with_tls(config: &str, extra: &[String], tls: Option<&Path>) -> Self {
        Self::start(config, extra, tls, None, &placeholder_routes(), None)
    }

    fn start(
        config: &str,
        extra: &[String],
        tls: Option<&Path>,
        cluster_port: Option<u16>,
        env: &[(String, String)],
        log: Option<&Path>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for f in FRAGMENTS {
            std::fs::copy(docs_nats().join(f), dir.path().join(f)).unwrap();
        }
        let text = std::fs::read_to_string(docs_nats().join(config)).unwrap();
        assert!(
            text.contains(STORE_DIR_LINE),
            "{config} no longer says {STORE_DIR_LINE:?}"
        );
        let store = dir.path().join("jetstream");
        let text = text.replace(
            STORE_DIR_LINE,
            &format!("store_dir: {:?}", store.display().to_string()),
        );
        let text = match tls {
            Some(tls) => enable_client_tls(&text, tls),
            None => text,
        };
        let text = match cluster_port {
            Some(p) => {
                assert!(
                    text.contains(CLUSTER_LISTEN_LINE),
                    "{config} no longer says {CLUSTER_LISTEN_LINE:?}"
                );
                text.replace(CLUSTER_LISTEN_LINE, &format!("listen: 127.0.0.1:{p}"))
            }
            None => text,
        };
        let path = dir.path().join(config);
        std::fs::write(&path, text).unwrap();
        let (port, monitor) = (free_port(), free_port());
        let mut cmd = Command::new("nats-server");
        cmd.arg("-c")
            .arg(&path)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .args(extra)
            .envs(PASSWORDS.iter().copied())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(log) = log {
            cmd.arg("-l").arg(log);
        }
        Self {
            port,
            monitor,
            _process: Process::spawn("nats-server", cmd),
            _dir: dir,
        }
    }

    /// Waits until the server answers /healthz (JetStream ready).
    fn ready(&self) {
        self.answers("/healthz");
    }

    /// Waits until the server's monitoring endpoint `path` answers 200.
    fn answers(&self, path: &str) {
        let monitor = format!("127.0.0.1:{}", self.monitor);
        wait_until_blocking(
            &format!("nats-server {path} to answer ok"),
            Duration::from_secs(30),
            || http_get_ok(&monitor, path),
        );
    }

    fn single() -> Self {
        let s = Self::spawn("lab-single.conf", &[]);
        s.ready();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Uncomments the top-level `# tls {` ... `# }` block of a config and points its certificate
/// paths into `tls`.
fn enable_client_tls(text: &str, tls: &Path) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        if line == "# tls {" {
            inside = true;
            found = true;
        }
        let line = if inside {
            line.strip_prefix("# ").unwrap_or(line)
        } else {
            line
        };
        if inside && line == "}" {
            inside = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(found, "the config has no commented top-level tls block");
    out.replace("/etc/banger/tls/", &format!("{}/", tls.display()))
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lab CA, a server certificate for 127.0.0.1 and a client certificate, named as the configs
/// and docs/lab.md name them.
fn make_certificates(dir: &Path) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=banger lab CA"];
    ca.extend(key);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "lab-a",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("client", "cli", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let subj = format!("/CN={cn}");
        let (keyout, csr, pem) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut req = vec!["req", "-subj", &subj];
        req.extend(key);
        req.extend(["-keyout", &keyout, "-out", &csr]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

/// A client logged in as `user`, and the server errors it receives.
struct Client {
    nats: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Client {
    async fn connect(url: &str, user: &str) -> Self {
        let (tx, errors) = mpsc::unbounded_channel();
        // Each role reads its replies on its own inbox prefix, as the services are configured.
        let nats = ConnectOptions::with_user_and_password(user.into(), password(user).into())
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(ServerError::Other(e)) = event {
                        let _ = tx.send(e);
                    }
                }
            })
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connecting as {user}: {e}"));
        Self { nats, errors }
    }

    /// Waits for the server to report a permissions violation naming `subject`.
    async fn expect_violation(&mut self, what: &str, subject: &str) {
        let found = tokio::time::timeout(VIOLATION_WAIT, async {
            while let Some(e) = self.errors.recv().await {
                if e.to_lowercase().contains("permissions violation") && e.contains(subject) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            found,
            Ok(true),
            "{what}: no permissions violation for {subject}"
        );
    }

    /// Asserts no server error has arrived so far (after a flush, which orders it after
    /// everything sent before).
    async fn expect_no_errors(&mut self, what: &str) {
        self.nats.flush().await.unwrap();
        if let Ok(e) = self.errors.try_recv() {
            panic!("{what}: unexpected server error {e}");
        }
    }
}

/// Publishes `hello` on `subject` from `publisher`; whether `sub` (already subscribed) receives
/// it as its next message within `wait`.
async fn delivered(
    publisher: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
    subject: &str,
    wait: Duration,
) -> bool {
    publisher
        .publish(subject.to_owned(), "hello".into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    matches!(
        tokio::time::timeout(wait, sub.next()).await,
        Ok(Some(m)) if m.subject.as_str() == subject && m.payload.as_ref() == b"hello"
    )
}

#[test]
fn every_server_config_passes_nats_server_check() {
    if !nats_server_here() {
        return;
    }
    for config in SERVER_CONFIGS {
        let path = docs_nats().join(config);
        let out = Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .arg("-t")
            .envs(PASSWORDS.iter().copied())
            .envs(placeholder_routes())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{config}: {text}");
        assert!(text.contains("is valid"), "{config}: {text}");
        // No password has a default: without its variable the config is refused.
        let out = Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .arg("-t")
            .envs(PASSWORDS.iter().copied())
            .envs(placeholder_routes())
            .env_remove("BANGER_PW_STORD")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{config} is valid without BANGER_PW_STORD"
        );
    }
}

/// Unauthenticated and wrongly authenticated clients are refused.
#[test]
fn a_client_without_credentials_is_refused() {
    if !nats_server_here() {
        return;
    }
    let server = LabServer::single();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let anonymous = async_nats::connect(server.url()).await;
        assert!(anonymous.is_err(), "an anonymous client was accepted");
        let wrong = ConnectOptions::with_user_and_password("cli".into(), "wrong".into())
            .connect(server.url())
            .await;
        assert!(wrong.is_err(), "a wrong password was accepted");
        // The control: the right password is accepted.
        Client::connect(&server.url(), "cli").await;
    });
}

/// The CLI may command a host; a service may not command another service, and may not listen
/// on another service's subjects.
#[test]
fn a_service_role_cannot_use_another_services_subjects() {
    if !nats_server_here() {
        return;
    }
    let server = LabServer::single();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = server.url();
        let stop = format!("banger.host.{HOST}.vm.stop");
        let controller = Client::connect(&url, "vm-controller").await;
        let mut commands = controller
            .nats
            .subscribe(format!("banger.host.{HOST}.vm.>"))
            .await
            .unwrap();
        controller.nats.flush().await.unwrap();

        // Control: the CLI's command reaches the controller.
        let mut cli = Client::connect(&url, "cli").await;
        assert!(delivered(&cli.nats, &mut commands, &stop, DELIVERY_WAIT).await);
        cli.expect_no_errors("cli publishing a command").await;

        // dnsd may not stop a VM: the server refuses and the controller sees nothing.
        let mut dnsd = Client::connect(&url, "dnsd").await;
        dnsd.nats.publish(stop.clone(), "{}".into()).await.unwrap();
        dnsd.expect_violation("dnsd publishing a vm command", &stop)
            .await;
        // stord may not ask netd for a tap.
        let mut stord = Client::connect(&url, "stord").await;
        let attach = format!("banger.host.{HOST}.net.attach");
        stord
            .nats
            .publish(attach.clone(), "{}".into())
            .await
            .unwrap();
        stord
            .expect_violation("stord publishing a netd command", &attach)
            .await;
        // A service may not publish events: only the controllers do.
        let event = format!("banger.events.{HOST}.vm.{VM_ID}.started");
        stord
            .nats
            .publish(event.clone(), "{}".into())
            .await
            .unwrap();
        stord
            .expect_violation("stord publishing an event", &event)
            .await;
        // Nothing the refused publishers sent reached the controller (the CLI's next message
        // arrives first).
        assert!(delivered(&cli.nats, &mut commands, &stop, DELIVERY_WAIT).await);

        // Subscribing to another service's subjects is refused too.
        let mut netd = Client::connect(&url, "netd").await;
        let store = format!("banger.host.{HOST}.store.>");
        let _sub = netd.nats.subscribe(store.clone()).await.unwrap();
        netd.expect_violation("netd subscribing to stord's subjects", &store)
            .await;
        let _sub = stord
            .nats
            .subscribe(format!("banger.host.{HOST}.vm.>"))
            .await
            .unwrap();
        stord
            .expect_violation(
                "stord subscribing to the controller's subjects",
                &format!("banger.host.{HOST}.vm.>"),
            )
            .await;
        // ... while its own subjects are fine.
        let _own = netd
            .nats
            .subscribe(format!("banger.host.{HOST}.net.>"))
            .await
            .unwrap();
        netd.expect_no_errors("netd subscribing to its own subjects")
            .await;
    });
}

/// The viewer watches events (live and replayed from the stream) but cannot create a VM.
#[test]
fn the_viewer_watches_events_but_cannot_create_a_vm() {
    if !nats_server_here() {
        return;
    }
    let server = LabServer::single();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = server.url();
        // The operator creates the event stream, as `banger up` does.
        let cli = Client::connect(&url, "cli").await;
        let bus = banger_bus::Bus::new(cli.nats.clone(), banger_proto::Subjects::default());
        banger_bus::history::ensure_event_stream(&bus)
            .await
            .unwrap();

        let mut viewer = Client::connect(&url, "viewer").await;
        let mut events = viewer.nats.subscribe("banger.events.>").await.unwrap();
        viewer.nats.flush().await.unwrap();
        let controller = Client::connect(&url, "vm-controller").await;
        let event = format!("banger.events.{HOST}.vm.{VM_ID}.started");
        assert!(delivered(&controller.nats, &mut events, &event, DELIVERY_WAIT).await);
        viewer
            .expect_no_errors("viewer subscribing to events")
            .await;

        // Replay, as `banger events --since` does: an ordered consumer on the stream.
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let js = async_nats::jetstream::new(viewer.nats.clone());
        let stream = js
            .get_stream(banger_bus::history::stream_name("banger"))
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: "banger.events.>".into(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut replay = consumer.messages().await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), replay.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.subject.as_str(), event);

        // A VM create, placed or targeted, is refused.
        for subject in [
            "banger.vm.create".to_owned(),
            format!("banger.host.{HOST}.vm.create"),
        ] {
            viewer
                .nats
                .publish_with_reply(subject.clone(), viewer.nats.new_inbox(), "{}".into())
                .await
                .unwrap();
            viewer
                .expect_violation("viewer creating a VM", &subject)
                .await;
        }
        // Deleting the stream (an operator's right) is refused.
        let delete = "$JS.API.STREAM.DELETE.BANGER_EVENTS";
        viewer
            .nats
            .publish_with_reply(delete, viewer.nats.new_inbox(), "".into())
            .await
            .unwrap();
        viewer
            .expect_violation("viewer deleting the stream", delete)
            .await;
    });
}

/// The real services, each logged in as its role, register and answer; none of them hits a
/// permissions violation while starting and serving.
#[test]
fn the_services_run_with_their_role_credentials() {
    if !nats_server_here() || !require_root() {
        return;
    }
    // netd makes a bridge and nftables rules: inside a private namespace, like every process
    // of this test.
    let ns = NetNs::create("lp");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    ns.block_on(|| async {
        let server = LabServer::single();
        let dir = tempfile::tempdir().unwrap();
        // netd in lab mode, so its role's right to claim a subnet in the KV bucket and to
        // discover the other netds is exercised too.
        let config = dir.path().join("banger.toml");
        std::fs::write(
            &config,
            "[netd]\nlab_range = \"10.77.0.0/16\"\npeer_interval_secs = 1\n",
        )
        .unwrap();
        let services = [
            ("banger-vm-controller", "vm-controller"),
            ("banger-netd", "netd"),
            ("banger-stord", "stord"),
            ("banger-dnsd", "dnsd"),
        ];
        let mut procs: Vec<(String, Process, PathBuf)> = services
            .iter()
            .map(|(bin, user)| {
                let log = dir.path().join(format!("{user}.log"));
                let mut cmd = Command::new(bin_path(bin));
                cmd.args(["--nats-url", &server.url(), "--host-id", HOST])
                    .arg("--state-dir")
                    .arg(dir.path().join("state"))
                    .arg("--runtime-dir")
                    .arg(dir.path().join("run"))
                    .arg("--config")
                    .arg(&config)
                    .env("BANGER_NATS_USER", user)
                    .env("BANGER_NATS_PASSWORD", password(user))
                    .env("BANGER_NATS_INBOX_PREFIX", format!("_INBOX_{user}"))
                    .env("BANGER_NATS_REQUIRE_AUTH", "true")
                    .env("RUST_LOG", "warn")
                    .stderr(std::fs::File::create(&log).unwrap());
                ((*user).to_owned(), Process::spawn(bin, cmd), log)
            })
            .collect();

        let cli = Client::connect(&server.url(), "cli").await;
        let bus = banger_bus::Bus::new(cli.nats.clone(), banger_proto::Subjects::default());
        let mut expected: Vec<String> = services.iter().map(|(_, u)| (*u).to_owned()).collect();
        expected.sort();
        wait_until(
            "every service to answer $SRV.PING",
            Duration::from_secs(30),
            || async {
                let mut names: Vec<String> = bus
                    .ping(None, Duration::from_millis(300))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                names.sort();
                names == expected
            },
        )
        .await;

        // Each answers a request on its own subjects (a reply, success or error, proves the
        // subscription and the right to respond).
        for subject in [
            "banger.vm.list".to_owned(),
            format!("banger.host.{HOST}.vm.get"),
            format!("banger.host.{HOST}.net.status"),
            format!("banger.host.{HOST}.store.capabilities"),
            "banger.dns.status".to_owned(),
        ] {
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                cli.nats.request(subject.clone(), "{}".into()),
            )
            .await;
            assert!(
                matches!(reply, Ok(Ok(_))),
                "{subject}: no reply ({reply:?})"
            );
        }
        // netd claimed its subnet from the lab range with its role's rights.
        let status: banger_proto::net::NetStatus = bus
            .request(
                format!("banger.host.{HOST}.net.status"),
                &banger_proto::net::NetStatusRequest {},
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert!(status.subnet.starts_with("10.77."), "{}", status.subnet);
        // The controller keeps its heartbeat and reads the lab's members with its role's
        // rights: its vm.list answers name it as a live controller and the host as a member.
        wait_until(
            "the controller's vm.list answer to name its peers and members",
            Duration::from_secs(30),
            || async {
                bus.request::<_, banger_proto::vm::ListVmsReply>(
                    "banger.vm.list".to_owned(),
                    &banger_proto::vm::ListVmsRequest::default(),
                    Duration::from_secs(5),
                )
                .await
                .is_ok_and(|r| {
                    r.peers == Some(vec![HOST.to_owned()])
                        && r.members == Some(vec![HOST.to_owned()])
                })
            },
        )
        .await;

        // A clean stop, then no service logged a permissions violation.
        for (user, p, _) in &mut procs {
            let status = p.terminate(Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| s.success()),
                "{user} did not exit cleanly: {status:?}"
            );
        }
        for (user, _, log) in &procs {
            let text = std::fs::read_to_string(log).unwrap();
            assert!(
                !text.to_lowercase().contains("permissions violation")
                    && !text.to_lowercase().contains("authorization violation"),
                "{user} hit a permission error:\n{text}"
            );
        }
    });
}

/// The three cluster configs form one cluster, with route authentication really on: the
/// nodes dial each other with the route URLs of the environment (credentials included), an
/// event published on node A reaches a subscriber on node C, the users and permissions of the
/// configs hold on every node, and a server without the route credentials cannot join.
#[test]
fn the_three_cluster_configs_form_one_cluster() {
    if !nats_server_here() {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let route_ports = [free_port(), free_port(), free_port()];
    let routes: Vec<(String, String)> = ROUTE_VARS
        .iter()
        .zip(route_ports)
        .map(|(v, p)| {
            (
                (*v).to_owned(),
                format!("nats-route://route:{}@127.0.0.1:{p}", password("route")),
            )
        })
        .collect();
    let nodes: Vec<LabServer> = ["a", "b", "c"]
        .iter()
        .zip(route_ports)
        .map(|(n, p)| {
            LabServer::spawn_node(
                &format!("lab-cluster-{n}.conf"),
                p,
                &routes,
                &logs.path().join(format!("{n}.log")),
            )
        })
        .collect();
    // Every node has routes to both others (the configs name two peers each).
    for (n, node) in nodes.iter().enumerate() {
        let monitor = format!("127.0.0.1:{}", node.monitor);
        wait_until_blocking(
            &format!("node {n} to have its two routes"),
            Duration::from_secs(30),
            || {
                banger_testkit::http_get(&monitor, "/varz")
                    .is_some_and(|body| body.contains("\"routes\": 2,"))
            },
        );
    }
    // Not /healthz: a clustered JetStream reports healthy only once the meta group has a
    // leader, which on a loaded test machine can take longer than the server needs to route
    // messages — and routing is what this test is about. The monitoring port opens before
    // the client port, so wait for a client connection to be accepted.
    for n in &nodes {
        n.answers("/varz");
        let addr = format!("127.0.0.1:{}", n.port);
        wait_until_blocking(
            "the node to accept client connections",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
    }
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let viewer_c = Client::connect(&nodes[2].url(), "viewer").await;
        let mut events = viewer_c.nats.subscribe("banger.events.>").await.unwrap();
        viewer_c.nats.flush().await.unwrap();
        let controller_a = Client::connect(&nodes[0].url(), "vm-controller").await;
        let event = format!("banger.events.{HOST}.vm.{VM_ID}.started");
        // Interest takes a moment to cross the routes: publish again until it arrives.
        let reached = tokio::time::timeout(Duration::from_secs(20), async {
            while !delivered(&controller_a.nats, &mut events, &event, SHORT).await {}
        })
        .await;
        assert!(
            reached.is_ok(),
            "an event published on node A never reached a subscriber on node C"
        );
        // Permissions hold on every node: the viewer on node B cannot create a VM.
        let mut viewer_b = Client::connect(&nodes[1].url(), "viewer").await;
        viewer_b
            .nats
            .publish("banger.vm.create", "{}".into())
            .await
            .unwrap();
        viewer_b
            .expect_violation("viewer on node B creating a VM", "banger.vm.create")
            .await;

        // A controller that made its name bucket before any netd had made the subnet bucket
        // (3 replicas, as lab.md says) made it with 1; its role may raise it to the lab's.
        let bus_of = |c: &Client| Bus::new(c.nats.clone(), banger_proto::Subjects::default());
        let netd = bus_of(&Client::connect(&nodes[1].url(), "netd").await);
        let controller = bus_of(&controller_a);
        let prefix = controller.subjects().prefix().to_owned();
        let names = banger_proto::vm::name_bucket(&prefix);
        let spec = |description, replicas| BucketSpec {
            description,
            storage: StorageType::File,
            max_age: Duration::ZERO,
            replicas: Some(replicas),
        };
        // The meta group may still be electing its leader: creating streams waits for it.
        let made = tokio::time::timeout(Duration::from_secs(60), async {
            while kv::open(&controller, &names, spec("test: names", 1))
                .await
                .is_err()
            {}
            while kv::open(
                &netd,
                &banger_proto::net::subnet_bucket(&prefix),
                spec("test: subnets", 3),
            )
            .await
            .is_err()
            {}
        })
        .await;
        assert!(made.is_ok(), "the buckets could not be created");
        assert_eq!(
            kv::follow_lab_replicas(&controller, &names).await,
            Ok(LabReplicas::Raised { from: 1, to: 3 })
        );
        assert_eq!(
            kv::follow_lab_replicas(&controller, &names).await,
            Ok(LabReplicas::Enough)
        );
    });

    // A server that dials node A's route port without the route credentials is refused.
    let intruder_log = logs.path().join("intruder.log");
    let intruder_conf = logs.path().join("intruder.conf");
    std::fs::write(
        &intruder_conf,
        format!(
            "server_name: intruder\nlisten: \"127.0.0.1:{}\"\n\
             cluster {{\n  name: banger-lab\n  listen: \"127.0.0.1:{}\"\n  \
             routes: [\"nats-route://127.0.0.1:{}\"]\n}}\n",
            free_port(),
            free_port(),
            route_ports[0]
        ),
    )
    .unwrap();
    let mut cmd = Command::new("nats-server");
    cmd.arg("-c")
        .arg(&intruder_conf)
        .arg("-l")
        .arg(&intruder_log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _intruder = Process::spawn("nats-server", cmd);
    let a_log = logs.path().join("a.log");
    wait_until_blocking(
        "node A to refuse the route without credentials",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&a_log).is_ok_and(|l| {
                l.contains("Authorization Error") || l.contains("authentication error")
            })
        },
    );
    let varz =
        banger_testkit::http_get(&format!("127.0.0.1:{}", nodes[0].monitor), "/varz").unwrap();
    assert!(
        varz.contains("\"routes\": 2,"),
        "the intruder joined node A: {varz}"
    );
}

/// The TLS block shown (commented) in the single-node config works as written: with it on, a
/// client needs the lab CA and, because of `verify: true`, a client certificate too.
#[test]
fn the_shown_tls_block_requires_the_lab_ca_and_a_client_certificate() {
    if !nats_server_here() {
        return;
    }
    if !have_program("openssl") {
        skip("openssl is not installed (it makes the test certificates)");
        return;
    }
    let tls = tempfile::tempdir().unwrap();
    make_certificates(tls.path());
    let server = LabServer::spawn_with_tls("lab-single.conf", &[], Some(tls.path()));
    server.ready();
    let ca = tls.path().join("ca.pem");
    let (cert, key) = (
        tls.path().join("client.pem"),
        tls.path().join("client-key.pem"),
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let login = || ConnectOptions::with_user_and_password("cli".into(), password("cli").into());
        let url = server.url();
        // Without the lab CA the server's certificate is not trusted.
        let no_ca = login().require_tls(true).connect(&url).await;
        assert!(no_ca.is_err(), "a client without the lab CA connected");
        // With the CA but no client certificate, `verify: true` refuses the client.
        let no_cert = login()
            .add_root_certificates(ca.clone())
            .require_tls(true)
            .connect(&url)
            .await;
        assert!(no_cert.is_err(), "a client without a certificate connected");
        // With both, the client is in, and its role's permissions still apply.
        let client = login()
            .add_root_certificates(ca.clone())
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true)
            .connect(&url)
            .await
            .unwrap();
        let mut events = client.subscribe("banger.events.>").await.unwrap();
        client.flush().await.unwrap();
        let controller = ConnectOptions::with_user_and_password(
            "vm-controller".into(),
            password("vm-controller").into(),
        )
        .add_root_certificates(ca.clone())
        .add_client_certificate(cert.clone(), key.clone())
        .require_tls(true)
        .connect(&url)
        .await
        .unwrap();
        let event = format!("banger.events.{HOST}.vm.{VM_ID}.started");
        assert!(delivered(&controller, &mut events, &event, DELIVERY_WAIT).await);
    });
}

/// Replies travel on per-role inboxes: a role may read its own (`_INBOX_<role>.>`) and no one
/// else's, so a logged-in service cannot read the operator's replies.
#[test]
fn one_role_cannot_read_another_roles_replies() {
    if !nats_server_here() {
        return;
    }
    let server = LabServer::single();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = server.url();
        // netd answers its own subject, as the real netd does.
        let netd = Client::connect(&url, "netd").await;
        let subject = format!("banger.host.{HOST}.net.status");
        let mut requests = netd.nats.subscribe(subject.clone()).await.unwrap();
        netd.nats.flush().await.unwrap();
        let responder = netd.nats.clone();
        tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                if let Some(reply) = m.reply {
                    let _ = responder.publish(reply, "secret".into()).await;
                }
            }
        });

        // dnsd tries to read the operator's replies, and every reply: both refused.
        let mut dnsd = Client::connect(&url, "dnsd").await;
        let mut snoop = dnsd.nats.subscribe("_INBOX_cli.>").await.unwrap();
        dnsd.expect_violation("dnsd reading the cli's replies", "_INBOX_cli.>")
            .await;
        let _all = dnsd.nats.subscribe("_INBOX.>").await.unwrap();
        dnsd.expect_violation("dnsd reading the shared inbox", "_INBOX.>")
            .await;
        // Its own inbox is fine.
        let _own = dnsd.nats.subscribe("_INBOX_dnsd.>").await.unwrap();
        dnsd.expect_no_errors("dnsd reading its own replies").await;

        // The operator's request is answered on its own inbox, and the snooper got nothing.
        let cli = Client::connect(&url, "cli").await;
        let reply = tokio::time::timeout(
            DELIVERY_WAIT,
            cli.nats.request(subject.clone(), "{}".into()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.payload.as_ref(), b"secret");
        assert!(
            tokio::time::timeout(SHORT, snoop.next()).await.is_err(),
            "dnsd received a reply meant for the cli"
        );
        // The old shared prefix is no longer anyone's: a cli client that does not set its
        // prefix cannot even receive its replies.
        let plain = ConnectOptions::with_user_and_password("cli".into(), password("cli").into())
            .connect(&url)
            .await
            .unwrap();
        let refused =
            tokio::time::timeout(DELIVERY_WAIT, plain.request(subject, "{}".into())).await;
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "a reply arrived on the shared _INBOX prefix: {refused:?}"
        );
    });
}

/// Told that the lab requires auth, a service refuses an open server even when it was given
/// credentials (an open server accepts any), and so does the CLI; without credentials it
/// refuses before connecting.
#[test]
fn services_refuse_an_open_server_when_the_lab_requires_auth() {
    if !nats_server_here() {
        return;
    }
    let open = banger_testkit::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let run = |bin: &str, args: &[&str], creds: bool| {
        let mut cmd = Command::new(bin_path(bin));
        cmd.args([
            "--nats-url",
            &open.url(),
            "--host-id",
            HOST,
            "--nats-require-auth",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if creds {
            cmd.args(["--nats-user", "stord", "--nats-password", "anything"]);
        }
        let mut child = cmd.spawn().unwrap();
        // It must exit by itself, promptly; a service that started serving would not.
        wait_until_blocking(
            &format!("{bin} to refuse and exit"),
            Duration::from_secs(30),
            || matches!(child.try_wait(), Ok(Some(_))),
        );
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = run("banger-stord", &[], true);
    assert!(!ok, "stord ran against an open server: {text}");
    assert!(text.contains("does not require any"), "{text}");
    let (ok, text) = run("banger-stord", &[], false);
    assert!(!ok, "stord ran without credentials: {text}");
    assert!(text.contains("requires NATS credentials"), "{text}");
    let (ok, text) = run("banger", &["vm", "list"], true);
    assert!(!ok, "the CLI used an open server: {text}");
    assert!(text.contains("does not require any"), "{text}");
}

/// `scripts/lab-init` writes the configs, one password per role (private files, never
/// overwritten), and logins that work as written: the operator's CLI config connects (with its
/// inbox prefix and `require_auth`), a service's environment file logs it in as its role.
#[test]
fn lab_init_writes_credentials_that_log_in_with_their_role() {
    if !nats_server_here() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab-init");
    let out = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(&script)
            .arg(out.path())
            .args(["--url", "nats://127.0.0.1:4222"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    for f in [
        "nats/passwords.env",
        "services/stord.env",
        "services/netd.env",
        "cli/operator.toml",
        "cli/viewer.toml",
    ] {
        let mode = std::fs::metadata(out.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f} is readable by others");
    }
    let again = run();
    assert!(
        !again.status.success(),
        "a second run overwrote the passwords"
    );

    // nats-server from the generated config and passwords.
    let env: Vec<(String, String)> = std::fs::read_to_string(out.path().join("nats/passwords.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env.len(), PASSWORDS.len() + ROUTE_VARS.len(), "{env:?}");
    let conf = out.path().join("nats/lab-single.conf");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        STORE_DIR_LINE,
        &format!(
            "store_dir: {:?}",
            out.path().join("js").display().to_string()
        ),
    );
    std::fs::write(&conf, text).unwrap();
    let (port, monitor) = (free_port(), free_port());
    let mut cmd = Command::new("nats-server");
    cmd.arg("-c")
        .arg(&conf)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Process::spawn("nats-server", cmd);
    let monitor = format!("127.0.0.1:{monitor}");
    wait_until_blocking("nats-server to be healthy", Duration::from_secs(30), || {
        http_get_ok(&monitor, "/healthz")
    });
    let url = format!("nats://127.0.0.1:{port}");

    // The operator's CLI config, as written (the URL aside).
    let cli = Command::new(bin_path("banger"))
        .arg("--config")
        .arg(out.path().join("cli/operator.toml"))
        .args(["--nats-url", &url, "ping"])
        .env("XDG_CONFIG_HOME", out.path().join("xdg"))
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "the generated operator config cannot log in: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    // A service's environment file logs it in as its role, which holds its role's rights.
    let stord: Vec<(String, String)> =
        std::fs::read_to_string(out.path().join("services/stord.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let get = |k: &str| {
        stord
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("BANGER_NATS_USER"), "stord");
    assert_eq!(get("BANGER_NATS_INBOX_PREFIX"), "_INBOX_stord");
    assert_eq!(get("BANGER_NATS_REQUIRE_AUTH"), "true");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (tx, mut errors) = mpsc::unbounded_channel();
        let client = ConnectOptions::with_user_and_password(
            get("BANGER_NATS_USER"),
            get("BANGER_NATS_PASSWORD"),
        )
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(e)) = event {
                    let _ = tx.send(e);
                }
            }
        })
        .connect(&url)
        .await
        .unwrap();
        let _own = client
            .subscribe(format!("banger.host.{HOST}.store.>"))
            .await
            .unwrap();
        client.flush().await.unwrap();
        assert!(
            errors.try_recv().is_err(),
            "stord may not read its own subjects"
        );
        let _other = client
            .subscribe(format!("banger.host.{HOST}.vm.>"))
            .await
            .unwrap();
        let e = tokio::time::timeout(VIOLATION_WAIT, errors.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(e.to_lowercase().contains("permissions violation"), "{e}");
    });
}

/// A read-only viewer that runs a command its role may not is told "permission denied" at
/// once (the server's permissions violation ends the command), not after its whole timeout
/// with a hint to start the stack.
#[test]
fn a_denied_viewer_is_told_permission_denied_at_once() {
    if !nats_server_here() {
        return;
    }
    let server = LabServer::single();
    let state = tempfile::tempdir().unwrap();
    for args in [
        &["vm", "list"][..],
        &["status"][..],
        &["vm", "create", "web"][..],
    ] {
        let started = std::time::Instant::now();
        let out = Command::new(bin_path("banger"))
            .args(["--nats-url", &server.url(), "--timeout", "60"])
            .args([
                "--nats-user",
                "viewer",
                "--nats-password",
                password("viewer"),
            ])
            .args(["--nats-inbox-prefix", "_INBOX_viewer"])
            .args(args)
            .env("BANGER_STATE_DIR", state.path())
            .env("XDG_CONFIG_HOME", state.path().join("xdg"))
            .env("NO_COLOR", "1")
            .env_remove("BANGER_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("permission denied"), "{args:?}: {stderr}");
        assert!(stderr.contains("\"viewer\""), "{args:?}: {stderr}");
        assert!(!stderr.contains("banger up"), "{args:?}: {stderr}");
        // "At once": far below the 60 s timeout (the violation comes back in milliseconds).
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}
