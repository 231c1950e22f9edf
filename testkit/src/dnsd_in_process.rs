//! A dnsd for tests and benchmarks, on its own NATS server and DNS port: [`InProcess`] runs
//! `banger_dnsd::run` in this process (what a benchmark wants: no process start, the same code);
//! [`start_binary`] runs the real `banger-dnsd` binary (what a test of the binary wants).

#![allow(
    clippy::unwrap_used,
    reason = "test and benchmark helpers: a dnsd that cannot start is a failed run"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use banger_bus::config::{CommonArgs, CommonConfig};
use banger_bus::runtime::Context;
use banger_bus::shutdown::CancellationToken;

use crate::dns_packets::{query_packet, raw_udp};
use crate::{NatsServer, Process, bin_path, free_port, wait_until};

/// The host id dnsd itself runs as in tests.
pub const DNSD_HOST: &str = "dnshost";

/// A `[dnsd]`-only config file in `dir`, so no system config is read.
pub fn config_file(dir: &Path, dnsd_table: &str) -> std::path::PathBuf {
    let p = dir.join("banger.toml");
    std::fs::write(&p, format!("[dnsd]\n{dnsd_table}\n")).unwrap();
    p
}

/// dnsd running in this process.
pub struct InProcess {
    /// Where it answers DNS.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), banger_dnsd::RunError>>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts dnsd on a free port with `dnsd_table` as its config, and waits until it answers
    /// DNS (after its start-up rebuild).
    pub async fn start(nats: &NatsServer, dnsd_table: &str) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Self::start_on(nats, dnsd_table, &[addr]).await
    }

    /// Starts dnsd answering on `listen`.
    pub async fn start_on(nats: &NatsServer, dnsd_table: &str, listen: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_file(dir.path(), dnsd_table);
        let common = CommonArgs {
            config: Some(cfg),
            nats_urls: vec![nats.url()],
            host_id: Some(DNSD_HOST.into()),
            state_dir: Some(dir.path().join("state")),
            runtime_dir: Some(dir.path().join("run")),
            ..Default::default()
        };
        let config = CommonConfig::resolve(&common, "dnsd").unwrap();
        let ctx = Context::connect(config).await.unwrap();
        let args = banger_dnsd::Args {
            listen: listen.to_vec(),
            common,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(banger_dnsd::run(ctx, args, shutdown.clone()));
        let addr = listen[0];
        wait_until("dnsd to answer DNS", Duration::from_secs(20), || async {
            raw_udp(
                addr,
                &query_packet(1, "vm.", 6, 1, 0),
                Duration::from_millis(200),
            )
            .await
            .is_some()
        })
        .await;
        Self {
            addr,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    /// Its DNS port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Shuts dnsd down and returns its result.
    pub async fn stop(mut self) -> Result<(), banger_dnsd::RunError> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("dnsd stops within 15 s")
            .unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real `banger-dnsd` binary, answering on 127.0.0.1:`port`.
pub fn start_binary(nats: &NatsServer, dir: &Path, port: u16, dnsd_table: &str) -> Process {
    let cfg = config_file(dir, dnsd_table);
    let mut cmd = Command::new(bin_path("banger-dnsd"));
    cmd.arg("--config")
        .arg(cfg)
        .args(["--nats-url", &nats.url(), "--host-id", DNSD_HOST])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .env("RUST_LOG", "warn");
    Process::spawn("banger-dnsd", cmd)
}
