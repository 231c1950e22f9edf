//! The error object every service replies with.
//!
//! A reply is either the operation's result or an [`ApiError`]: a stable machine [`ErrorCode`]
//! and a human message. The bus runtime also copies both into NATS service-API error headers
//! (`Nats-Service-Error`, `Nats-Service-Error-Code`) so `nats req` shows them, and the CLI
//! turns the code into an exit status.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. New codes may be added; existing ones never change
/// meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The referenced VM, image, lease or record does not exist.
    NotFound,
    /// A reference matched more than one object.
    Ambiguous,
    /// The request was malformed or a value was out of range.
    InvalidArgument,
    /// The request conflicts with the current state (name taken, VM running, ...).
    Conflict,
    /// A resource is exhausted (no free address, no disk space).
    Exhausted,
    /// A required peer or resource is not reachable right now; retrying may help.
    Unavailable,
    /// The operation did not finish within its deadline.
    Timeout,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// A bug or an unexpected failure on the service side.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Ambiguous => "ambiguous",
            Self::InvalidArgument => "invalid_argument",
            Self::Conflict => "conflict",
            Self::Exhausted => "exhausted",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::PermissionDenied => "permission_denied",
            Self::Internal => "internal",
        }
    }

    /// Parses a wire code; unknown codes (from a newer peer) map to [`ErrorCode::Internal`].
    pub fn from_wire(s: &str) -> Self {
        match s {
            "not_found" => Self::NotFound,
            "ambiguous" => Self::Ambiguous,
            "invalid_argument" => Self::InvalidArgument,
            "conflict" => Self::Conflict,
            "exhausted" => Self::Exhausted,
            "unavailable" => Self::Unavailable,
            "timeout" => Self::Timeout,
            "permission_denied" => Self::PermissionDenied,
            _ => Self::Internal,
        }
    }

    /// The numeric code put in the `Nats-Service-Error-Code` header (HTTP-like, as the NATS
    /// service API convention suggests).
    pub fn status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Ambiguous => 300,
            Self::InvalidArgument => 400,
            Self::Conflict => 409,
            Self::Exhausted => 507,
            Self::Unavailable => 503,
            Self::Timeout => 504,
            Self::PermissionDenied => 403,
            Self::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error object of a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{message} ({code})")]
pub struct ApiError {
    /// Stable machine code.
    pub code: ErrorCode,
    /// Human message: lowercase, no trailing period, says what failed and, where it can, what to
    /// do about it.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<crate::names::NameError> for ApiError {
    fn from(e: crate::names::NameError) -> Self {
        Self::invalid(e.to_string())
    }
}

/// The body of an error reply: `{"error": {"code": ..., "message": ...}}`. A success reply is
/// the bare result, so the two never collide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// The error.
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_on_the_wire() {
        let all = [
            ErrorCode::NotFound,
            ErrorCode::Ambiguous,
            ErrorCode::InvalidArgument,
            ErrorCode::Conflict,
            ErrorCode::Exhausted,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::PermissionDenied,
            ErrorCode::Internal,
        ];
        for code in all {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert_eq!(ErrorCode::from_wire(code.as_str()), code);
        }
        assert_eq!(ErrorCode::from_wire("something_new"), ErrorCode::Internal);
    }

    #[test]
    fn error_reply_has_the_documented_shape() {
        let reply = ErrorReply {
            error: ApiError::not_found("no VM named \"web\""),
        };
        let v: serde_json::Value = serde_json::to_value(&reply).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no VM named \"web\"");
        let back: ErrorReply = serde_json::from_value(v).unwrap();
        assert_eq!(back, reply);
    }
}
