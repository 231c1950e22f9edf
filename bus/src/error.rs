//! Errors of the bus runtime.

use banger_proto::{ApiError, ErrorCode};

/// Failure to set up or use the bus connection.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Connecting to NATS failed.
    #[error("connecting to NATS at {urls}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A credentials or key file could not be read.
    #[error("reading NATS credentials from {path}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The options do not make sense together.
    #[error("invalid bus configuration: {0}")]
    Config(String),
    /// Registering with the NATS service API failed.
    #[error("registering service {name} with the NATS service API: {message}")]
    Register {
        /// Service name.
        name: String,
        /// Why.
        message: String,
    },
    /// A service was started without serving every operation the contract gives it.
    #[error("service {service} does not serve {missing}: add a `serve` line for each")]
    Unserved {
        /// Service name.
        service: String,
        /// The operations left out (`vm::Health, vm::Logs`).
        missing: String,
    },
    /// Subscribing failed.
    #[error("subscribing to {subject}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// Publishing failed.
    #[error("publishing on {subject}")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::PublishError,
    },
    /// Encoding a message failed.
    #[error("encoding a message for {subject}")]
    Encode {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Why a typed request did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The service answered with an error object.
    #[error(transparent)]
    Remote(#[from] ApiError),
    /// Nobody listens on the subject.
    #[error("no service answers on {subject}: is it running and connected to the same NATS?")]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// No answer within the deadline.
    #[error("no answer on {subject} within {timeout_ms} ms")]
    Timeout {
        /// The subject.
        subject: String,
        /// The deadline.
        timeout_ms: u128,
    },
    /// The request could not be encoded.
    #[error("encoding the request for {subject}")]
    Encode {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The reply could not be decoded.
    #[error("decoding the reply from {subject}")]
    Decode {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Transport failure.
    #[error("request on {subject} failed: {message}")]
    Transport {
        /// The subject.
        subject: String,
        /// Why.
        message: String,
    },
}

impl RequestError {
    /// The stable error code of this failure, for exit codes and for passing an upstream error
    /// on to a caller.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Remote(e) => e.code,
            Self::NoResponders { .. } => ErrorCode::Unavailable,
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::Encode { .. } => ErrorCode::InvalidArgument,
            Self::Decode { .. } | Self::Transport { .. } => ErrorCode::Internal,
        }
    }

    /// Converts into an [`ApiError`] to pass on to this service's own caller, prefixed with
    /// what we were doing.
    pub fn into_api(self, doing: &str) -> ApiError {
        match self {
            Self::Remote(e) => ApiError::new(e.code, format!("{doing}: {}", e.message)),
            other => ApiError::new(other.code(), format!("{doing}: {other}")),
        }
    }
}
