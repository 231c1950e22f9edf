//! The foundation every service stands on: each binary registers with the NATS service API,
//! continues the caller's trace, survives a nats-server restart and exits cleanly on SIGTERM.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::process::Command;
use std::time::Duration;

use async_nats::HeaderMap;
use banger_bus::Bus;
use banger_proto::Subjects;
use banger_proto::op::{self, Operation};
use banger_testkit::netns::NetNs;
use banger_testkit::{NatsServer, Process, bin_path, require_root, wait_until};

const SERVICES: &[(&str, &str)] = &[
    ("banger-vm-controller", "vm-controller"),
    ("banger-netd", "netd"),
    ("banger-stord", "stord"),
    ("banger-dnsd", "dnsd"),
];

const HOST: &str = "testhost";

fn start_service(bin: &str, nats: &NatsServer, state: &std::path::Path) -> Process {
    let mut cmd = Command::new(bin_path(bin));
    cmd.args(["--nats-url", &nats.url(), "--host-id", HOST])
        .arg("--state-dir")
        .arg(state.join("state"))
        .arg("--runtime-dir")
        .arg(state.join("run"))
        .env("RUST_LOG", "warn");
    Process::spawn(bin, cmd)
}

async fn bus(nats: &NatsServer) -> Bus {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Bus::new(client, Subjects::default())
}

async fn names_answering_ping(bus: &Bus) -> Vec<String> {
    let mut names: Vec<String> = bus
        .ping(None, Duration::from_millis(200))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// nats-server and every service, all answering `$SRV.PING`; keep the first three alive.
async fn start_every_service() -> (NatsServer, TempDir, Vec<Process>, Bus) {
    let nats = NatsServer::start();
    let dir = tempfile_dir();
    let procs: Vec<Process> = SERVICES
        .iter()
        .map(|(bin, _)| start_service(bin, &nats, dir.path()))
        .collect();
    let bus = bus(&nats).await;
    wait_until(
        "every service to answer $SRV.PING",
        Duration::from_secs(20),
        || async { names_answering_ping(&bus).await == expected_names() },
    )
    .await;
    (nats, dir, procs, bus)
}

fn expected_names() -> Vec<String> {
    let mut v: Vec<String> = SERVICES.iter().map(|(_, n)| (*n).to_owned()).collect();
    v.sort();
    v
}

#[test]
fn every_service_registers_and_answers_srv_ping_with_its_host() {
    in_private_netns(|| async {
        let (_nats, _dir, _procs, bus) = start_every_service().await;
        for s in bus.ping(None, Duration::from_millis(200)).await.unwrap() {
            assert_eq!(
                s.host(),
                Some(HOST),
                "{} metadata: {:?}",
                s.name,
                s.metadata
            );
            assert_eq!(
                s.metadata.get("contract").map(String::as_str),
                Some(banger_proto::CONTRACT_VERSION)
            );
        }
    });
}

/// A request carrying a `traceparent` is handled in the same trace: the reply's
/// `traceparent` has the caller's trace id and a new span id (the service's span).
#[test]
fn a_request_continues_the_callers_trace_in_every_service() {
    in_private_netns(|| async {
        let (_nats, _dir, _procs, bus) = start_every_service().await;

        let s = Subjects::default();
        let host = banger_proto::HostId::new(HOST).unwrap();
        let subjects = [
            op::vm::List::subject(&s, &op::Lab),
            op::net::Status::subject(&s, &host),
            op::store::ImageList::subject(&s, &host),
            op::dns::Status::subject(&s, &op::Lab),
        ];
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent_span = "00f067aa0ba902b7";
        for subject in subjects {
            let mut headers = HeaderMap::new();
            headers.insert(
                "traceparent",
                format!("00-{trace_id}-{parent_span}-01").as_str(),
            );
            let reply = bus
                .client()
                .request_with_headers(subject.clone(), headers, bytes::Bytes::from_static(b"{}"))
                .await
                .unwrap_or_else(|e| panic!("{subject}: {e}"));
            let tp = reply
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| panic!("{subject}: reply has no traceparent"));
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{subject}: {tp}");
            assert_eq!(
                parts[1], trace_id,
                "{subject}: trace id not continued: {tp}"
            );
            assert_ne!(
                parts[2], parent_span,
                "{subject}: the service made no span of its own"
            );
            assert!(
                reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Service-Error"))
                    .is_none(),
                "{subject}: unexpected error reply"
            );
        }
    });
}

#[test]
fn a_service_answers_again_after_nats_server_restarts() {
    in_private_netns(|| async {
        let mut nats = NatsServer::start();
        let dir = tempfile_dir();
        let _netd = start_service("banger-netd", &nats, dir.path());
        let bus_before = bus(&nats).await;
        wait_until("netd to answer", Duration::from_secs(20), || async {
            names_answering_ping(&bus_before).await == ["netd"]
        })
        .await;

        nats.restart();

        // A fresh client, so only the service's reconnect is under test.
        let bus_after = bus(&nats).await;
        wait_until(
            "netd to answer after the restart",
            Duration::from_secs(30),
            || async { names_answering_ping(&bus_after).await == ["netd"] },
        )
        .await;
        // The service API subscriptions and the endpoint subscriptions are restored separately,
        // so wait for a real request to succeed rather than assuming their order.
        let subject = op::net::Status::subject(
            &Subjects::default(),
            &banger_proto::HostId::new(HOST).unwrap(),
        );
        let status = std::sync::Mutex::new(serde_json::Value::Null);
        wait_until(
            "netd to answer a request after the restart",
            Duration::from_secs(30),
            || async {
                let r = bus_after
                    .request::<_, serde_json::Value>(
                        subject.clone(),
                        &serde_json::json!({}),
                        Duration::from_secs(1),
                    )
                    .await;
                r.map(|v| *status.lock().unwrap() = v).is_ok()
            },
        )
        .await;
        let status = status.into_inner().unwrap();
        assert!(status.get("bridge").is_some(), "{status}");
    });
}

#[test]
fn every_service_exits_cleanly_on_sigterm() {
    in_private_netns(|| async {
        let nats = NatsServer::start();
        let dir = tempfile_dir();
        let mut procs: Vec<(&str, Process)> = SERVICES
            .iter()
            .map(|(bin, name)| (*name, start_service(bin, &nats, dir.path())))
            .collect();
        let bus = bus(&nats).await;
        wait_until(
            "every service to answer $SRV.PING",
            Duration::from_secs(20),
            || async { names_answering_ping(&bus).await == expected_names() },
        )
        .await;
        for (name, p) in &mut procs {
            let status = p.terminate(Duration::from_secs(10)).expect("exit status");
            assert!(status.success(), "{name} exited with {status} on SIGTERM");
        }
        // Deregistered: nothing answers any more.
        assert!(names_answering_ping(&bus).await.is_empty());
    });
}

/// Runs a test body inside a private network namespace (as root): netd creates a real bridge
/// and nftables table and turns on IP forwarding, which must never touch the host's network.
/// nats-server and every service started in `body` run in the namespace too.
fn in_private_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !require_root() {
        return;
    }
    let ns = NetNs::create("bf");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    ns.block_on(body);
}

fn tempfile_dir() -> TempDir {
    TempDir::new()
}

/// A temporary directory removed on drop (std only, to keep this crate's deps small).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "banger-e2e-{}-{}",
            std::process::id(),
            banger_testkit::free_port()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Regression: a service told to stop while nats-server is already gone (the whole stack
/// stopping at once) used to hang in its drain, waiting on the dead connection.
#[test]
fn a_service_exits_on_sigterm_even_when_nats_is_gone() {
    in_private_netns(|| async {
        let mut nats = NatsServer::start();
        let dir = tempfile_dir();
        let mut netd = start_service("banger-netd", &nats, dir.path());
        let bus = bus(&nats).await;
        wait_until("netd to answer", Duration::from_secs(20), || async {
            names_answering_ping(&bus).await == ["netd"]
        })
        .await;
        nats.stop();
        let status = netd
            .terminate(Duration::from_secs(15))
            .expect("exit status");
        assert!(
            status.success(),
            "netd exited with {status} on SIGTERM while NATS was down"
        );
    });
}
