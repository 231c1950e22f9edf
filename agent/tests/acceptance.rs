//! The agent binary end to end: health, info and exec over its Unix socket and through a
//! hybrid vsock (`CONNECT <port>`) socket, with the limits and shutdown behaviour the host
//! relies on.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod support;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use banger_agent_client::hybrid_vsock::HandshakeError;
use banger_agent_client::{AgentClient, ClientError};
use banger_proto::agent::{
    AgentErrorCode, DEFAULT_AGENT_PORT, ErrorReply, ExecFrame, ExecRequest, OutputStream,
};
use banger_testkit::wait_until;
use support::{Agent, HybridVsock};

/// An agent with exec enabled behind a hybrid vsock socket on the default port.
struct Setup {
    agent: Agent,
    vsock: HybridVsock,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::start(dir.path(), "agent", extra).await;
        let vsock = HybridVsock::start(
            dir.path().join("vsock.sock"),
            HashMap::from([(DEFAULT_AGENT_PORT, agent.socket.clone())]),
        );
        Self { agent, vsock, dir }
    }

    fn client(&self) -> AgentClient {
        self.vsock.client(DEFAULT_AGENT_PORT)
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_this_kernel_over_unix_and_hybrid_vsock() {
    let s = Setup::start(&[]).await;
    let hostname = nix::unistd::gethostname().unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    for client in [s.agent.direct(), s.client()] {
        let h = client.health().await.unwrap();
        assert_eq!(h.status, "ok");
        assert_eq!(h.hostname, hostname.to_string_lossy());
        assert_eq!(h.boot_id, boot_id.trim());
        assert!(h.uptime_secs > 0.0, "{h:?}");
        assert_eq!(h.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(h.mem_total_bytes > 0 && h.rootfs_total_bytes > 0, "{h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_reports_kernel_os_and_addresses() {
    let s = Setup::start(&["--allow-exec"]).await;
    let info = s.client().info().await.unwrap();
    let uts = nix::sys::utsname::uname().unwrap();
    assert_eq!(info.kernel.release, uts.release().to_string_lossy());
    assert!(info.exec_enabled);
    if std::path::Path::new("/etc/os-release").exists() {
        assert!(info.os.id.is_some(), "{:?}", info.os);
    }
    assert!(
        info.addresses.iter().any(|a| a.address.is_loopback()),
        "{:?}",
        info.addresses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdout_and_stderr_and_returns_the_exit_code() {
    let s = Setup::start(&["--allow-exec"]).await;
    let req = sh("echo out; echo err >&2; exit 3");

    let mut stream = s.client().exec(&req).await.unwrap();
    let mut frames = Vec::new();
    while let Some(f) = stream.next_frame().await.unwrap() {
        frames.push(f);
    }
    let output = |want: OutputStream| -> String {
        frames
            .iter()
            .filter_map(|f| match f {
                ExecFrame::Output { stream, data } if *stream == want => Some(data.as_str()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(output(OutputStream::Stdout), "out\n");
    assert_eq!(output(OutputStream::Stderr), "err\n");
    match frames.last().unwrap() {
        ExecFrame::Exit { exit } => {
            assert_eq!(exit.code, Some(3));
            assert_eq!(exit.signal, None);
            assert!(!exit.timed_out);
        }
        other => panic!("last frame is not the exit: {other:?}"),
    }

    let r = s.client().exec_collect(&req).await.unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(3), "out\n", "err\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_arrives_while_the_command_is_still_running() {
    let s = Setup::start(&["--allow-exec"]).await;
    let gate = s.dir.path().join("gate");
    // The command cannot finish until the test creates `gate`, which it only does after the
    // first line has arrived: the line must have been streamed, not buffered until exit.
    let script = format!(
        "echo first; while [ ! -e '{}' ]; do sleep 0.01; done; echo second",
        gate.display()
    );
    let mut stream = s.client().exec(&sh(&script)).await.unwrap();
    assert_eq!(
        stream.next_frame().await.unwrap(),
        Some(ExecFrame::Output {
            stream: OutputStream::Stdout,
            data: "first\n".into()
        })
    );
    std::fs::write(&gate, "").unwrap();
    assert_eq!(
        stream.next_frame().await.unwrap(),
        Some(ExecFrame::Output {
            stream: OutputStream::Stdout,
            data: "second\n".into()
        })
    );
    match stream.next_frame().await.unwrap() {
        Some(ExecFrame::Exit { exit }) => assert_eq!(exit.code, Some(0)),
        other => panic!("expected the exit, got {other:?}"),
    }
    assert_eq!(stream.next_frame().await.unwrap(), None);
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: killed all the same).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_with_its_process_group() {
    let s = Setup::start(&["--allow-exec"]).await;
    let req = ExecRequest {
        timeout_ms: Some(300),
        // The background sleep is in the command's process group: it must die too.
        ..sh("sleep 60 & echo $!; wait")
    };
    let r = s.client().exec_collect(&req).await.unwrap();
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.exit_code, None);
    assert_eq!(r.signal, Some(9));
    let child: i32 = r.stdout.trim().parse().unwrap();
    wait_until(
        "the backgrounded sleep to be killed",
        Duration::from_secs(10),
        || async move { is_dead(child) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_binary_is_a_clear_command_not_found_error() {
    let s = Setup::start(&["--allow-exec"]).await;
    for program in [
        "banger-no-such-command",
        "/nonexistent/banger-no-such-command",
    ] {
        let err = s
            .client()
            .exec(&ExecRequest::new([program]))
            .await
            .unwrap_err();
        match err {
            ClientError::Agent {
                status,
                code,
                message,
            } => {
                assert_eq!(status, 422);
                assert_eq!(code, AgentErrorCode::CommandNotFound);
                assert!(message.contains(program), "{message}");
            }
            other => panic!("expected an agent error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_refused_with_403_unless_enabled() {
    let s = Setup::start(&[]).await;
    let err = s
        .client()
        .exec(&ExecRequest::new(["true"]))
        .await
        .unwrap_err();
    assert_eq!(
        err.agent_code(),
        Some(AgentErrorCode::ExecDisabled),
        "{err}"
    );
    assert!(matches!(err, ClientError::Agent { status: 403, .. }));
    assert!(err.to_string().contains("allow-exec"), "{err}");
    assert!(!s.client().info().await.unwrap().exec_enabled);
}

/// Sends `head` and then (from another thread) `body`, and returns the response head and body
/// the agent answered while the body was still being sent.
fn raw_exchange(socket: &std::path::Path, head: String, body: Vec<u8>) -> String {
    let mut conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    let mut writer = conn.try_clone().unwrap();
    // The agent stops reading after the headers; this write then fails with EPIPE once the
    // agent closes, or blocks on a full socket buffer until it does. Either is fine.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    drop(conn);
    sender.join().unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_request_is_refused_with_413_without_being_read() {
    let s = Setup::start(&["--allow-exec"]).await;
    let size = 10 * 1024 * 1024;
    let socket = s.agent.socket.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let head = format!(
            "POST /v1/exec HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
             Content-Length: {size}\r\n\r\n"
        );
        // Only the headers: the agent must answer without waiting for the body.
        raw_exchange(&socket, head, Vec::new())
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let body = reply.split_once("\r\n\r\n").unwrap().1;
    let err: ErrorReply = serde_json::from_str(body).unwrap();
    assert_eq!(err.error.code, AgentErrorCode::TooLarge);

    // Without a Content-Length (chunked), the limit is enforced while reading.
    let socket = s.agent.socket.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let head = "POST /v1/exec HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut body = Vec::new();
        for _ in 0..10 {
            body.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
            body.extend(std::iter::repeat_n(b' ', 1024 * 1024));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        raw_exchange(&socket, head.to_owned(), body)
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // The agent is still healthy afterwards.
    s.client().health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_get_json_errors() {
    let s = Setup::start(&[]).await;
    let socket = s.agent.socket.clone();
    let replies = tokio::task::spawn_blocking(move || {
        [
            "GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "DELETE /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ]
        .map(|head| raw_exchange(&socket, head.to_owned(), Vec::new()))
    })
    .await
    .unwrap();
    assert!(replies[0].starts_with("HTTP/1.1 404"), "{}", replies[0]);
    assert!(replies[0].contains("\"not_found\""), "{}", replies[0]);
    assert!(replies[1].starts_with("HTTP/1.1 405"), "{}", replies[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_port_without_an_agent_is_a_handshake_error() {
    let s = Setup::start(&[]).await;
    let err = s.vsock.client(1234).health().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Handshake {
                port: 1234,
                source: HandshakeError::Closed,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_removes_the_socket_and_kills_running_commands() {
    let mut s = Setup::start(&["--allow-exec"]).await;
    let mut stream = s
        .client()
        .exec(&sh("sleep 60 & echo $!; wait"))
        .await
        .unwrap();
    let pid: i32 = match stream.next_frame().await.unwrap() {
        Some(ExecFrame::Output { data, .. }) => data.trim().parse().unwrap(),
        other => panic!("expected the pid, got {other:?}"),
    };
    let status = tokio::task::spawn_blocking(move || {
        let status = s.agent.process.terminate(Duration::from_secs(15));
        (status, s)
    })
    .await
    .unwrap();
    let (status, s) = status;
    assert!(status.unwrap().success(), "agent exit status {status:?}");
    assert!(!s.agent.socket.exists(), "the socket file is removed");
    // The running command was killed and its stream ended with an error frame.
    match stream.next_frame().await {
        Ok(Some(ExecFrame::Error { error })) => {
            assert_eq!(error.code, AgentErrorCode::ShuttingDown);
        }
        other => panic!("expected a shutting_down frame, got {other:?}"),
    }
    wait_until(
        "the command to be killed",
        Duration::from_secs(10),
        || async move { is_dead(pid) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_ping_helper_keys_are_accepted_with_a_deprecation_warning() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("legacy.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"unix:{}\"\nallow_exec = true\nvsock_ping_port = 52\n",
            socket.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut cmd = std::process::Command::new(support::AGENT_BIN);
    cmd.arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    let agent = Agent::spawn(cmd, socket).await;
    let r = agent
        .direct()
        .exec_collect(&ExecRequest::new(["echo", "hi"]))
        .await
        .unwrap();
    assert_eq!(r.stdout, "hi\n");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("vsock_ping_port is deprecated"),
        "no deprecation warning in: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsock_listen_binds_and_exits_zero_on_sigterm() {
    // A port of our own, so parallel runs on one host rarely collide.
    let port = 40_000 + std::process::id() % 20_000;
    match tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
        tokio_vsock::VMADDR_CID_ANY,
        port,
    )) {
        Ok(probe) => drop(probe),
        Err(e) => {
            banger_testkit::skip(&format!("AF_VSOCK is not available here: {e}"));
            return;
        }
    }
    // This kernel has no vsock loopback transport, so nothing can connect: check that the
    // agent binds AF_VSOCK, says so, and shuts down cleanly.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    let log = dir.path().join("agent.log");
    let mut cmd = std::process::Command::new(support::AGENT_BIN);
    cmd.args(["--listen", &format!("vsock:{port}"), "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    let mut agent = banger_testkit::Process::spawn("banger-agent", cmd);
    let serving = format!("vsock:{port}");
    wait_until("the agent to bind vsock", Duration::from_secs(20), || {
        let log = log.clone();
        let serving = serving.clone();
        async move {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("agent serving") && l.contains(&serving))
        }
    })
    .await;
    let status = tokio::task::spawn_blocking(move || agent.terminate(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(status.unwrap().success(), "agent exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_exec_stream_kills_the_command() {
    let s = Setup::start(&["--allow-exec"]).await;
    let mut stream = s
        .client()
        .exec(&sh("sleep 60 & echo $!; wait"))
        .await
        .unwrap();
    let pid: i32 = match stream.next_frame().await.unwrap() {
        Some(ExecFrame::Output { data, .. }) => data.trim().parse().unwrap(),
        other => panic!("expected the pid, got {other:?}"),
    };
    assert!(!is_dead(pid));
    drop(stream);
    wait_until(
        "the abandoned command to be killed",
        Duration::from_secs(10),
        || async move { is_dead(pid) },
    )
    .await;
    // The agent keeps serving.
    s.client().health().await.unwrap();
}
