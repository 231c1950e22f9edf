//! The Firecracker API client: HTTP/1.1 over the VMM's Unix API socket.
//!
//! One connection per call (Firecracker serves one request at a time and the calls are rare),
//! or one for several calls in turn through a [`Session`] (a boot's configuration); each call
//! bounded by a deadline covering connect, request and reply. A reply that is not
//! 2xx becomes [`ClientError::Api`] carrying the status and Firecracker's `fault_message`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), banger_firecracker::client::ClientError> {
//! use banger_firecracker::client::FirecrackerClient;
//! use banger_firecracker::models::{BootSource, MachineConfiguration};
//!
//! let fc = FirecrackerClient::new("/run/banger/vms/web/api.sock");
//! fc.put_machine_config(&MachineConfiguration::new(2, 1024)).await?;
//! fc.put_boot_source(&BootSource {
//!     kernel_image_path: "/var/lib/banger/images/debian/vmlinux".into(),
//!     boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
//!     initrd_path: None,
//! })
//! .await?;
//! fc.instance_start().await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::calls::{self, ApiCall, EncodeError};
use crate::models::{
    ApiErrorBody, BootSource, Drive, FirecrackerVersion, InstanceInfo, Logger,
    MachineConfiguration, Metrics, NetworkInterface, SnapshotCreateParams, SnapshotLoadParams,
    Vsock,
};

/// The deadline of a call unless [`FirecrackerClient::with_timeout`] says otherwise.
///
/// Firecracker answers configuration calls in microseconds and `InstanceStart` in well under a
/// second; five seconds covers a loaded host while keeping a wedged VMM quick to report.
/// Snapshot calls on large guests may need a longer one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest reply body read; Firecracker's replies are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// A Firecracker API call failed. Every variant names the call (`put_drive`, ...).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API socket could not be connected to (no such file, nobody listening, ...).
    #[error("{call}: connecting to the api socket {}", path.display())]
    Connect {
        /// The call.
        call: &'static str,
        /// The API socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection closed early, malformed reply, ...).
    #[error("{call}: http exchange with firecracker failed")]
    Http {
        /// The call.
        call: &'static str,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// No complete answer within the deadline.
    #[error("{call}: no answer from firecracker within {timeout:?}")]
    Timeout {
        /// The call.
        call: &'static str,
        /// The deadline.
        timeout: Duration,
    },
    /// Firecracker answered with an error status.
    #[error("{call}: firecracker answered {status}: {fault_message}")]
    Api {
        /// The call.
        call: &'static str,
        /// HTTP status (400 for bad input and wrong-state actions).
        status: u16,
        /// Firecracker's `fault_message` (the raw body when it was not the usual JSON).
        fault_message: String,
    },
    /// The reply body was not what the definition says.
    #[error("{call}: decoding firecracker's reply")]
    Decode {
        /// The call.
        call: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The path is not a valid request target (an id with spaces or other reserved
    /// characters); nothing was sent.
    #[error("{call}: {path:?} is not a valid api path")]
    InvalidPath {
        /// The call.
        call: &'static str,
        /// The path.
        path: String,
    },
    /// The request body could not be encoded (a path that is not UTF-8).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl ClientError {
    /// The call that failed.
    pub fn call(&self) -> &'static str {
        match self {
            Self::Connect { call, .. }
            | Self::Http { call, .. }
            | Self::Timeout { call, .. }
            | Self::Api { call, .. }
            | Self::Decode { call, .. }
            | Self::InvalidPath { call, .. } => call,
            Self::Encode(e) => e.call,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Firecracker's `fault_message` of an API error.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            Self::Api { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }

    /// Whether the VMM could not be reached at all (its process is gone or not listening):
    /// the caller may treat the VM as not running.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// Drives a hyper client connection; aborted when dropped.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client of one Firecracker process's API socket. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerClient {
    socket: PathBuf,
    timeout: Duration,
}

impl FirecrackerClient {
    /// A client of the API socket at `api_socket`, with [`DEFAULT_TIMEOUT`] per call. Nothing
    /// is connected until a call is made.
    pub fn new(api_socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: api_socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with a different per-call deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `PUT /machine-config` (pre-boot).
    pub async fn put_machine_config(&self, body: &MachineConfiguration) -> Result<(), ClientError> {
        self.no_content(calls::put_machine_config(body)?).await
    }

    /// `PUT /boot-source` (pre-boot).
    pub async fn put_boot_source(&self, body: &BootSource) -> Result<(), ClientError> {
        self.no_content(calls::put_boot_source(body)?).await
    }

    /// `PUT /drives/{drive_id}` (pre-boot).
    pub async fn put_drive(&self, body: &Drive) -> Result<(), ClientError> {
        self.no_content(calls::put_drive(body)?).await
    }

    /// `PUT /network-interfaces/{iface_id}` (pre-boot).
    pub async fn put_network_interface(&self, body: &NetworkInterface) -> Result<(), ClientError> {
        self.no_content(calls::put_network_interface(body)?).await
    }

    /// `PUT /vsock` (pre-boot).
    pub async fn put_vsock(&self, body: &Vsock) -> Result<(), ClientError> {
        self.no_content(calls::put_vsock(body)?).await
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, body: &Logger) -> Result<(), ClientError> {
        self.no_content(calls::put_logger(body)?).await
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&self, body: &Metrics) -> Result<(), ClientError> {
        self.no_content(calls::put_metrics(body)?).await
    }

    /// `PUT /actions` `InstanceStart`: boots the guest.
    pub async fn instance_start(&self) -> Result<(), ClientError> {
        self.no_content(calls::instance_start()?).await
    }

    /// `PUT /actions` `SendCtrlAltDel`: asks the guest to shut down. A guest booted with
    /// `reboot=k` then makes Firecracker exit; one that ignores it keeps running.
    pub async fn send_ctrl_alt_del(&self) -> Result<(), ClientError> {
        self.no_content(calls::send_ctrl_alt_del()?).await
    }

    /// `PUT /actions` `FlushMetrics`.
    pub async fn flush_metrics(&self) -> Result<(), ClientError> {
        self.no_content(calls::flush_metrics()?).await
    }

    /// `GET /`: id, state and VMM version.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, ClientError> {
        self.json(calls::describe_instance()).await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion, ClientError> {
        self.json(calls::version()).await
    }

    /// `GET /machine-config`.
    pub async fn get_machine_config(&self) -> Result<MachineConfiguration, ClientError> {
        self.json(calls::get_machine_config()).await
    }

    /// `PATCH /vm` `Paused`.
    pub async fn pause(&self) -> Result<(), ClientError> {
        self.no_content(calls::pause()?).await
    }

    /// `PATCH /vm` `Resumed`.
    pub async fn resume(&self) -> Result<(), ClientError> {
        self.no_content(calls::resume()?).await
    }

    /// `PUT /snapshot/create` (the VM must be paused).
    pub async fn create_snapshot(&self, body: &SnapshotCreateParams) -> Result<(), ClientError> {
        self.no_content(calls::create_snapshot(body)?).await
    }

    /// `PUT /snapshot/load` (on a fresh process only).
    pub async fn load_snapshot(&self, body: &SnapshotLoadParams) -> Result<(), ClientError> {
        self.no_content(calls::load_snapshot(body)?).await
    }

    /// Sends `call` and expects 2xx; the body, if any, is ignored.
    async fn no_content(&self, call: ApiCall) -> Result<(), ClientError> {
        self.execute(&call).await.map(drop)
    }

    /// Sends `call` and decodes a 2xx JSON body.
    async fn json<T: DeserializeOwned>(&self, call: ApiCall) -> Result<T, ClientError> {
        let body = self.execute(&call).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            call: call.name,
            source,
        })
    }

    /// Sends `call` under the deadline; returns a 2xx body or the error.
    pub async fn execute(&self, call: &ApiCall) -> Result<Bytes, ClientError> {
        let span = tracing::debug_span!("firecracker", call = call.name, path = %call.path);
        match tokio::time::timeout(self.timeout, self.exchange(call).instrument(span)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                call: call.name,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(&self, call: &ApiCall) -> Result<Bytes, ClientError> {
        let mut conn = self.connect(call.name).await?;
        send(&mut conn.sender, call).await
    }

    /// Opens a connection to the API socket, its driving task aborted when it is dropped.
    async fn connect(&self, name: &'static str) -> Result<Conn, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    call: name,
                    path: self.socket.clone(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Http { call: name, source })?;
        // The connection task drives the socket; the guard aborts it when the call returns or
        // the deadline cancels it, so no task outlives the call.
        let task = ConnTask(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "firecracker api connection ended with an error");
            }
        }));
        Ok(Conn {
            sender,
            _task: task,
        })
    }

    /// A session: several calls, one after the other, over one connection (see [`Session`]).
    pub fn session(&self) -> Session {
        Session {
            client: self.clone(),
            conn: None,
        }
    }
}

/// An open HTTP/1.1 connection to the API socket.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    _task: ConnTask,
}

/// Several calls to one VMM over one HTTP/1.1 connection (keep-alive), one after the other: a
/// boot configures the VMM with eight calls, and a connection per call costs a connect, a
/// handshake and a task each. When the VMM closes the connection after a reply (a VMM without
/// keep-alive), the next call opens a new one; a request is sent again on a new connection only
/// when it never left on the old one. Dropping the session closes the connection.
pub struct Session {
    client: FirecrackerClient,
    conn: Option<Conn>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.client)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Session {
    /// Sends `call` under the client's deadline; returns a 2xx body or the error.
    pub async fn execute(&mut self, call: &ApiCall) -> Result<Bytes, ClientError> {
        let span = tracing::debug_span!("firecracker", call = call.name, path = %call.path);
        let timeout = self.client.timeout;
        match tokio::time::timeout(timeout, self.exchange(call).instrument(span)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be mid-exchange: never reuse it.
                self.conn = None;
                Err(ClientError::Timeout {
                    call: call.name,
                    timeout,
                })
            }
        }
    }

    /// Sends `call` and expects 2xx; the body, if any, is ignored.
    pub async fn no_content(&mut self, call: ApiCall) -> Result<(), ClientError> {
        self.execute(&call).await.map(drop)
    }

    async fn exchange(&mut self, call: &ApiCall) -> Result<Bytes, ClientError> {
        let name = call.name;
        if let Some(mut conn) = self.conn.take()
            && conn.sender.ready().await.is_ok()
        {
            match conn.sender.try_send_request(request(call)?).await {
                Ok(response) => {
                    let result = reply(name, response).await;
                    if result.is_ok() {
                        self.conn = Some(conn);
                    }
                    return result;
                }
                Err(mut e) => {
                    // Sent, and the connection failed: the VMM may have acted on it, so it is
                    // not sent again. Never sent (the VMM had closed the connection): sent on a
                    // new one below.
                    if e.take_message().is_none() {
                        return Err(ClientError::Http {
                            call: name,
                            source: e.into_error(),
                        });
                    }
                }
            }
        }
        let mut conn = self.client.connect(name).await?;
        let result = send(&mut conn.sender, call).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}

/// The HTTP request of `call`.
fn request(call: &ApiCall) -> Result<Request<Full<Bytes>>, ClientError> {
    let body = match &call.body {
        Some(v) => Full::new(Bytes::from(v.to_string())),
        None => Full::new(Bytes::new()),
    };
    let method = Method::from_bytes(call.method.as_bytes()).unwrap_or(Method::GET);
    let mut builder = Request::builder()
        .method(method)
        .uri(call.path.as_str())
        .header(HOST, "localhost")
        .header(ACCEPT, "application/json");
    if call.body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder.body(body).map_err(|_| ClientError::InvalidPath {
        call: call.name,
        path: call.path.clone(),
    })
}

/// Sends `call` on `sender` and reads the reply.
async fn send(sender: &mut SendRequest<Full<Bytes>>, call: &ApiCall) -> Result<Bytes, ClientError> {
    let response = sender
        .send_request(request(call)?)
        .await
        .map_err(|source| ClientError::Http {
            call: call.name,
            source,
        })?;
    reply(call.name, response).await
}

/// A reply's 2xx body, or the error it carries.
async fn reply(
    name: &'static str,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Bytes, ClientError> {
    let http = |source| ClientError::Http { call: name, source };
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(h) => http(*h),
            Err(other) => ClientError::Api {
                call: name,
                status: status.as_u16(),
                fault_message: format!("reply body unreadable: {other}"),
            },
        })?
        .to_bytes();
    tracing::debug!(status = status.as_u16(), "firecracker answered");
    if status.is_success() {
        return Ok(body);
    }
    Err(api_error(name, status, &body))
}

/// Builds the error for a non-2xx reply from Firecracker's `{"fault_message": ...}` body.
fn api_error(call: &'static str, status: StatusCode, body: &[u8]) -> ClientError {
    let fault_message = match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(b) if !b.fault_message.is_empty() => b.fault_message,
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    ClientError::Api {
        call,
        status: status.as_u16(),
        fault_message,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::UnixListener;

    use super::*;

    /// Serves one connection with a canned HTTP reply and returns the request it read.
    async fn one_shot(listener: UnixListener, reply: &'static str) -> String {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Read until the end of headers plus any announced body.
        loop {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        s.write_all(reply.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Serves `204` to every request on every connection, counting the connections; with
    /// `close`, each connection ends after one reply (`connection: close`).
    async fn serve_204(listener: UnixListener, conns: Arc<AtomicUsize>, close: bool) {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 4096];
                loop {
                    // One request: headers, then the body its content-length announces.
                    let request_end = loop {
                        let text = String::from_utf8_lossy(&got).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break end + 4 + len;
                            }
                        }
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    };
                    got.drain(..request_end);
                    let reply = if close {
                        "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
                    } else {
                        "HTTP/1.1 204 No Content\r\n\r\n"
                    };
                    s.write_all(reply.as_bytes()).await.unwrap();
                    if close {
                        s.shutdown().await.unwrap();
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_session_sends_its_calls_over_one_connection_and_reconnects_when_closed() {
        for (close, expected) in [(false, 1), (true, 4)] {
            let dir = tempfile::tempdir().unwrap();
            let sock = dir.path().join("api.sock");
            let conns = Arc::new(AtomicUsize::new(0));
            let server = tokio::spawn(serve_204(
                UnixListener::bind(&sock).unwrap(),
                Arc::clone(&conns),
                close,
            ));
            let mut session = FirecrackerClient::new(&sock).session();
            session
                .no_content(calls::put_machine_config(&MachineConfiguration::new(1, 128)).unwrap())
                .await
                .unwrap();
            session
                .no_content(
                    calls::put_drive(&Drive::new("rootfs", "/r.ext4", true, false)).unwrap(),
                )
                .await
                .unwrap();
            session
                .no_content(calls::put_drive(&Drive::new("work", "/w.ext4", false, false)).unwrap())
                .await
                .unwrap();
            session
                .no_content(calls::instance_start().unwrap())
                .await
                .unwrap();
            assert_eq!(
                conns.load(Ordering::SeqCst),
                expected,
                "connections with close={close}"
            );
            server.abort();
        }
    }

    #[tokio::test]
    async fn an_error_reply_carries_status_and_fault_message() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(one_shot(
            listener,
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 43\r\n\r\n{\"fault_message\":\"Invalid drive id: x y z\"}",
        ));
        let err = FirecrackerClient::new(&sock)
            .put_drive(&Drive::new("rootfs", "/r.ext4", true, false))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.fault_message(), Some("Invalid drive id: x y z"));
        assert_eq!(err.call(), "put_drive");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("PUT /drives/rootfs HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\"path_on_host\":\"/r.ext4\""),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = FirecrackerClient::new(dir.path().join("none.sock"))
            .instance_start()
            .await
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(err.call(), "instance_start");
    }

    #[tokio::test]
    async fn a_silent_vmm_hits_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        // Accept and hold the connection without answering.
        let _server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let err = FirecrackerClient::new(&sock)
            .with_timeout(Duration::from_millis(100))
            .version()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Timeout {
                    call: "version",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_reply_that_is_not_the_definition_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let _server = tokio::spawn(one_shot(
            listener,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        ));
        let err = FirecrackerClient::new(&sock).version().await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Decode {
                    call: "version",
                    ..
                }
            ),
            "{err}"
        );
    }
}
