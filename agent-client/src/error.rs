//! What can go wrong talking to the agent, by step.

use std::path::PathBuf;
use std::time::Duration;

use banger_proto::agent::AgentErrorCode;

use crate::hybrid_vsock::HandshakeError;

/// A call to the agent failed; the variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting to the Unix socket failed (VM not running, wrong path).
    #[error("connecting to {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The hybrid vsock handshake failed (usually: no agent listening on the port).
    #[error("hybrid vsock handshake on {path} for guest port {port}")]
    Handshake {
        /// The VM's vsock socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
        /// Why.
        #[source]
        source: HandshakeError,
    },
    /// The HTTP exchange failed.
    #[error("http: {step}")]
    Http {
        /// The step: starting the connection, sending the request, reading the stream.
        step: &'static str,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// Building the request failed.
    #[error("building the request")]
    Request(#[source] hyper::http::Error),
    /// Encoding the request body failed.
    #[error("encoding the request")]
    Encode(#[source] serde_json::Error),
    /// Reading a reply body failed (or it was larger than 1 MiB).
    #[error("reading the reply body")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The reply did not decode.
    #[error("decoding the agent's {what} reply")]
    Decode {
        /// Which reply.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The agent answered with an error.
    #[error("the agent refused ({status} {code}): {message}")]
    Agent {
        /// HTTP status (200 when the error came as the last frame of an exec stream).
        status: u16,
        /// The agent's error code.
        code: AgentErrorCode,
        /// The agent's message.
        message: String,
    },
    /// The agent answered a status without its error object.
    #[error("the agent answered {status} with an unexpected body {body:?}")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
        /// The body, lossy UTF-8.
        body: String,
    },
    /// The exec stream broke the framing rules.
    #[error("malformed exec stream: {0}")]
    Protocol(String),
    /// The exec stream ended without an exit status.
    #[error("the exec stream ended before the command's exit status")]
    Truncated,
    /// The call ran past its deadline.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The call: health, info, exec.
        op: &'static str,
        /// The deadline it had.
        after: Duration,
    },
}

impl ClientError {
    /// The agent's error code, when the agent itself refused.
    pub fn agent_code(&self) -> Option<AgentErrorCode> {
        match self {
            Self::Agent { code, .. } => Some(*code),
            _ => None,
        }
    }
}
