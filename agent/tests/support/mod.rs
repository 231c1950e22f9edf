//! Fixtures for the agent's acceptance tests and bench: the real `banger-agent` binary on a
//! Unix socket, and a stand-in for Firecracker's hybrid vsock socket that answers `CONNECT
//! <port>` and forwards to the agent socket registered for that port.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a module shared by the test and the bench; each uses a different subset"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger_agent_client::AgentClient;
use banger_testkit::{Process, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The agent binary cargo built for this package.
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_banger-agent");

/// A running agent on `unix:<socket>`.
pub struct Agent {
    pub process: Process,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts the agent on `<dir>/<name>.sock` with an empty config file (so a host's
    /// /etc/banger/agent.toml never leaks in) plus `extra` flags, and waits until it answers.
    pub async fn start(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, "").unwrap();
        Self::start_with_config(dir, name, &config, extra).await
    }

    /// Like [`Agent::start`] with the given config file; `--listen` is still passed.
    pub async fn start_with_config(dir: &Path, name: &str, config: &Path, extra: &[&str]) -> Self {
        let socket = dir.join(format!("{name}.sock"));
        let mut cmd = Command::new(AGENT_BIN);
        cmd.arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--config")
            .arg(config)
            .args(extra);
        Self::spawn(cmd, socket).await
    }

    /// Spawns `cmd` (which must make the agent listen on `socket`) and waits until it answers.
    pub async fn spawn(cmd: Command, socket: PathBuf) -> Self {
        let process = Process::spawn("banger-agent", cmd);
        let client = AgentClient::direct_unix(socket.clone()).with_timeout(Duration::from_secs(2));
        wait_until(
            "the agent to answer /healthz",
            Duration::from_secs(20),
            || {
                let client = client.clone();
                async move { client.health().await.is_ok() }
            },
        )
        .await;
        Self { process, socket }
    }

    /// A client on the agent's own socket.
    pub fn direct(&self) -> AgentClient {
        AgentClient::direct_unix(self.socket.clone()).with_timeout(Duration::from_secs(10))
    }
}

/// Stands in for Firecracker's vsock Unix socket: reads `CONNECT <port>\n`, connects to the
/// agent socket registered for that port, answers `OK <n>\n` and splices the two streams.
/// An unknown port gets the connection closed, as Firecracker does.
pub struct HybridVsock {
    pub path: PathBuf,
    task: JoinHandle<()>,
}

impl HybridVsock {
    pub fn start(path: PathBuf, ports: HashMap<u32, PathBuf>) -> Self {
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let mut next_host_port = 1_073_741_824_u32;
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                next_host_port += 1;
                tokio::spawn(forward(conn, ports.clone(), next_host_port));
            }
        });
        Self { path, task }
    }

    /// A client through this socket to guest `port`.
    pub fn client(&self, port: u32) -> AgentClient {
        AgentClient::new(self.path.clone(), port).with_timeout(Duration::from_secs(10))
    }
}

impl Drop for HybridVsock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut conn: UnixStream, ports: HashMap<u32, PathBuf>, host_port: u32) {
    // Byte by byte, as Firecracker's muxer does not over-read either.
    let mut line = Vec::new();
    loop {
        let Ok(b) = conn.read_u8().await else { return };
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > 64 {
            return;
        }
    }
    let line = String::from_utf8_lossy(&line);
    let Some(port) = line
        .strip_prefix("CONNECT ")
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return;
    };
    let Some(target) = ports.get(&port) else {
        return; // nothing listens on that guest port: close
    };
    let Ok(mut guest) = UnixStream::connect(target).await else {
        return;
    };
    if conn
        .write_all(format!("OK {host_port}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut guest).await;
}
