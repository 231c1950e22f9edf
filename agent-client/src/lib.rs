//! Host-side client of the banger guest agent.
//!
//! [`AgentClient`] reaches the agent inside a VM through Firecracker's hybrid vsock (the VM's
//! vsock Unix socket, `CONNECT <port>` — see [`hybrid_vsock`]) and then speaks HTTP/1.1 to it,
//! one connection per call. [`AgentClient::direct_unix`] skips the handshake for an agent that
//! listens on its own Unix socket (tests, the simulator's per-port sockets).
//!
//! Every call has a deadline: [`AgentClient::with_timeout`] bounds connect + request + reply;
//! an exec stream is additionally allowed the command's own timeout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), banger_agent_client::ClientError> {
//! use banger_agent_client::AgentClient;
//! use banger_proto::agent::{DEFAULT_AGENT_PORT, ExecRequest};
//!
//! let agent = AgentClient::new("/run/banger/vms/web/vsock.sock".into(), DEFAULT_AGENT_PORT);
//! let health = agent.health().await?;
//! let result = agent.exec_collect(&ExecRequest::new(["uname", "-a"])).await?;
//! # Ok(()) }
//! ```

pub mod hybrid_vsock;

mod error;
mod exec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_proto::agent::{
    DEFAULT_EXEC_TIMEOUT_MS, EXEC_PATH, ErrorReply, HEALTHZ_PATH, INFO_PATH,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The wire types a caller needs, re-exported from `banger_proto::agent`.
pub use banger_proto::agent::{
    AgentErrorCode, DEFAULT_AGENT_PORT, ExecFrame, ExecRequest, ExecResult, ExitStatus, Health,
    Info, OutputStream,
};
pub use error::ClientError;
pub use exec::ExecStream;

/// How long a call may take unless [`AgentClient::with_timeout`] says otherwise: a healthy
/// agent answers in milliseconds; a few seconds covers a loaded host without making a dead
/// guest slow to report.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest non-streaming reply body read (health, info, errors).
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The `Host` header sent (HTTP/1.1 requires one; the agent ignores it).
const HOST_HEADER: &str = "banger-agent";

/// How the client reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A Firecracker vsock Unix socket, then `CONNECT <port>`.
    HybridVsock { uds_path: PathBuf, port: u32 },
    /// The agent's own Unix socket.
    DirectUnix { path: PathBuf },
}

/// A client of one VM's guest agent. Cheap to clone; each call opens its own connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentClient {
    target: Target,
    timeout: Duration,
}

/// Drives a hyper client connection; aborted when dropped so no task outlives its call.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AgentClient {
    /// A client for guest vsock `port` behind the VM's Firecracker vsock socket `uds_path`.
    pub fn new(uds_path: PathBuf, port: u32) -> Self {
        Self {
            target: Target::HybridVsock { uds_path, port },
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client for an agent listening on its own Unix socket (`banger-agent --listen
    /// unix:<path>`): no handshake.
    pub fn direct_unix(path: PathBuf) -> Self {
        Self {
            target: Target::DirectUnix { path },
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the deadline of each call (connect + handshake + request + reply).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Unix socket this client connects to.
    pub fn socket_path(&self) -> &Path {
        match &self.target {
            Target::HybridVsock { uds_path, .. } => uds_path,
            Target::DirectUnix { path } => path,
        }
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get_json("health", HEALTHZ_PATH).await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<Info, ClientError> {
        self.get_json("info", INFO_PATH).await
    }

    /// `POST /v1/exec`: starts the command and returns its frames as they arrive. Errors the
    /// agent reports before starting it (exec disabled, command not found, request too large)
    /// come back here as [`ClientError::Agent`].
    ///
    /// The stream's deadline is the command's timeout (the request's, else the agent's
    /// default) plus this client's timeout, so the agent always gets to report a timed-out
    /// command before the client gives up.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecStream, ClientError> {
        let start = Instant::now();
        let body = serde_json::to_vec(req).map_err(ClientError::Encode)?;
        let run_for = Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS));
        let stream_deadline = start + run_for + self.timeout;
        let op = "exec";
        let (resp, conn) = self
            .within(
                op,
                start + self.timeout,
                self.send(Method::POST, EXEC_PATH, body),
            )
            .await?;
        if resp.status() != StatusCode::OK {
            let err = self
                .within(op, start + self.timeout, error_of(resp))
                .await?;
            return Err(err);
        }
        Ok(ExecStream::new(resp.into_body(), conn, stream_deadline))
    }

    /// Runs the command to completion and returns its collected output and exit.
    pub async fn exec_collect(&self, req: &ExecRequest) -> Result<ExecResult, ClientError> {
        self.exec(req).await?.collect().await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &'static str,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.timeout;
        self.within(op, deadline, async {
            let (resp, _conn) = self.send(Method::GET, path, Vec::new()).await?;
            if resp.status() != StatusCode::OK {
                return Err(error_of(resp).await?);
            }
            let body = read_body(resp).await?;
            serde_json::from_slice(&body).map_err(|source| ClientError::Decode { what: op, source })
        })
        .await
    }

    async fn within<T>(
        &self,
        op: &'static str,
        deadline: Instant,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout_at(deadline, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                op,
                after: self.timeout,
            })?
    }

    /// Opens the stream to the agent (with the handshake when needed).
    async fn connect(&self) -> Result<UnixStream, ClientError> {
        let path = self.socket_path();
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
        if let Target::HybridVsock { uds_path, port } = &self.target {
            hybrid_vsock::connect(&mut stream, *port)
                .await
                .map_err(|source| ClientError::Handshake {
                    path: uds_path.clone(),
                    port: *port,
                    source,
                })?;
        }
        Ok(stream)
    }

    /// Sends one request on a new connection; returns the response head and the task driving
    /// the connection (keep it alive while reading the body).
    async fn send(
        &self,
        method: Method,
        path: &'static str,
        body: Vec<u8>,
    ) -> Result<(Response<Incoming>, ConnTask), ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Http {
                step: "starting the connection",
                source,
            })?;
        let conn = ConnTask(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended with an error");
            }
        }));
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, HOST_HEADER);
        if !body.is_empty() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(ClientError::Request)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http {
                step: "sending the request",
                source,
            })?;
        Ok((resp, conn))
    }
}

async fn read_body(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    Limited::new(resp.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(ClientError::Body)
}

/// Turns a non-200 reply into [`ClientError::Agent`] (or [`ClientError::UnexpectedStatus`] when
/// the body is not the agent's error object).
async fn error_of(resp: Response<Incoming>) -> Result<ClientError, ClientError> {
    let status = resp.status().as_u16();
    let body = read_body(resp).await?;
    Ok(match serde_json::from_slice::<ErrorReply>(&body) {
        Ok(ErrorReply { error }) => ClientError::Agent {
            status,
            code: error.code,
            message: error.message,
        },
        Err(_) => ClientError::UnexpectedStatus {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_pick_the_transport_and_timeout() {
        let c = AgentClient::new("/tmp/v.sock".into(), 52);
        assert_eq!(c.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(c.socket_path(), Path::new("/tmp/v.sock"));
        let d = AgentClient::direct_unix("/tmp/a.sock".into()).with_timeout(Duration::from_secs(1));
        assert_eq!(d.timeout(), Duration::from_secs(1));
        assert!(matches!(d.target, Target::DirectUnix { .. }));
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let c = AgentClient::new("/nonexistent/banger/v.sock".into(), 52);
        assert!(matches!(c.health().await, Err(ClientError::Connect { .. })));
    }

    #[tokio::test]
    async fn a_silent_agent_hits_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        // Accepts and never answers.
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(s);
        });
        let c = AgentClient::new(path, 52).with_timeout(Duration::from_millis(200));
        match c.health().await {
            Err(ClientError::Timeout { op: "health", .. }) => {}
            other => panic!("expected a health timeout, got {other:?}"),
        }
        hold.abort();
    }
}
