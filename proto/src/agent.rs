//! The guest agent's HTTP API (over vsock), shared by the agent and its host-side client.
//!
//! The agent (`banger-agent`) serves HTTP/1.1 inside the guest:
//!
//! | request | reply |
//! | --- | --- |
//! | `GET /healthz` ([`HEALTHZ_PATH`]) | [`Health`] |
//! | `GET /v1/info` ([`INFO_PATH`]) | [`Info`] |
//! | `POST /v1/exec` ([`EXEC_PATH`]) with an [`ExecRequest`] body | a chunked stream of newline-delimited [`ExecFrame`]s |
//!
//! Every error reply, whatever the status, has the body [`ErrorReply`]
//! (`{"error":{"code":"exec_disabled","message":"..."}}`). An exec that fails after its output
//! started streaming ends with the same object as its last frame ([`ExecFrame::Error`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The vsock port the agent listens on by default.
///
/// 52: the port of the earlier ping helper (`banger-vsock-pingd`), kept so existing VM
/// definitions and images keep working.
pub const DEFAULT_AGENT_PORT: u32 = 52;

/// Path of the health endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Path of the guest information endpoint.
pub const INFO_PATH: &str = "/v1/info";
/// Path of the exec endpoint.
pub const EXEC_PATH: &str = "/v1/exec";

/// The timeout the agent applies to an exec whose request names none, milliseconds.
///
/// One minute: long enough for interactive one-off commands, short enough that a forgotten
/// `sleep infinity` does not pin a process in the guest.
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 60_000;

/// The largest request body the agent accepts by default (1 MiB); larger ones get 413.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024;

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the agent is serving.
    pub status: String,
    /// Guest uptime, seconds (`/proc/uptime`).
    pub uptime_secs: f64,
    /// Guest hostname.
    pub hostname: String,
    /// Agent version.
    pub agent_version: String,
    /// Kernel boot id (`/proc/sys/kernel/random/boot_id`), changes on every boot.
    pub boot_id: String,
    /// 1, 5 and 15 minute load averages (`/proc/loadavg`).
    pub load: [f64; 3],
    /// Total memory, bytes (`/proc/meminfo`).
    pub mem_total_bytes: u64,
    /// Available memory, bytes (`/proc/meminfo`).
    pub mem_available_bytes: u64,
    /// Root filesystem size, bytes (`statvfs("/")`).
    pub rootfs_total_bytes: u64,
    /// Root filesystem space available to unprivileged users, bytes (`statvfs("/")`).
    pub rootfs_free_bytes: u64,
}

// Health is compared whole in tests and carried inside `Eq` bus types; the floats it holds are
// parsed from the kernel's text and are never NaN.
impl Eq for Health {}

/// `GET /v1/info`: what the guest is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Guest hostname.
    pub hostname: String,
    /// Agent version.
    pub agent_version: String,
    /// Whether this agent runs commands (`POST /v1/exec`).
    pub exec_enabled: bool,
    /// The guest OS release (`/etc/os-release`).
    pub os: OsRelease,
    /// The running kernel (`uname`).
    pub kernel: KernelInfo,
    /// Every address on every interface (`getifaddrs`), loopback included.
    pub addresses: Vec<InterfaceAddress>,
}

/// The parsed `/etc/os-release` (empty when the file is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `void`.
    pub id: Option<String>,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: Option<String>,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
    /// Every key of the file, unquoted.
    pub fields: BTreeMap<String, String>,
}

/// `uname` of the guest kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// e.g. `Linux`.
    pub sysname: String,
    /// e.g. `6.1.0-18-amd64`.
    pub release: String,
    /// Build string.
    pub version: String,
    /// e.g. `x86_64`.
    pub machine: String,
}

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddress {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Prefix length from the netmask, when the kernel reports one.
    pub prefix_len: Option<u8>,
}

/// An exec request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; never interpreted by a shell. `argv[0]` is looked up on `PATH`
    /// when it holds no `/`.
    pub argv: Vec<String>,
    /// Extra environment, on top of the agent's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the agent's, `/` under the packaged services).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes to write to standard input (UTF-8); standard input is empty when absent.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command (its whole process group) after this many milliseconds; default
    /// [`DEFAULT_EXEC_TIMEOUT_MS`], capped by the agent's `exec_timeout_max_secs`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl ExecRequest {
    /// A request running `argv` with no extra environment, stdin or timeout.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            timeout_ms: None,
        }
    }
}

/// The result of a finished exec, collected from its frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// Whether it was killed for running past its timeout.
    pub timed_out: bool,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

/// Which output stream an [`ExecFrame::Output`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How an exec'd command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStatus {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// Whether the agent killed it for running past its timeout.
    pub timed_out: bool,
}

/// One line of the `POST /v1/exec` response body (newline-delimited JSON).
///
/// The body is zero or more `Output` frames in the order the output was read, then exactly one
/// `Exit` or `Error` frame:
///
/// ```text
/// {"stream":"stdout","data":"out\n"}
/// {"stream":"stderr","data":"err\n"}
/// {"exit":{"code":3,"signal":null,"timed_out":false}}
/// ```
///
/// Output is decoded as UTF-8 across chunk boundaries; bytes that are not UTF-8 become U+FFFD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecFrame {
    /// A piece of output.
    Output {
        /// The stream it was read from.
        stream: OutputStream,
        /// The text.
        data: String,
    },
    /// The command ended; the last frame.
    Exit {
        /// How.
        exit: ExitStatus,
    },
    /// The agent failed after the response started; the last frame.
    Error {
        /// What failed.
        error: ErrorBody,
    },
}

/// The body of every error reply: `{"error":{...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// The error.
    pub error: ErrorBody,
}

/// An agent error: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: AgentErrorCode,
    /// Human-readable message.
    pub message: String,
}

/// Stable agent error codes, with the HTTP status each comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentErrorCode {
    /// 400: the request is malformed (bad JSON, empty argv, NUL bytes, ...).
    InvalidArgument,
    /// 403: exec is disabled in this agent's config.
    ExecDisabled,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint exists, the method does not.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 413: the request body is larger than `max_request_bytes`.
    TooLarge,
    /// 422: `argv[0]` names no executable (not found on `PATH`, or not a file).
    CommandNotFound,
    /// 422: the working directory does not exist.
    BadWorkingDirectory,
    /// 422: the command exists but could not be started (permissions, exec format, ...).
    SpawnFailed,
    /// 500: the agent failed (reading `/proc`, a broken pipe to the child, ...).
    Internal,
    /// 503: the agent is shutting down.
    ShuttingDown,
}

impl AgentErrorCode {
    /// The HTTP status the agent answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::ExecDisabled => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::TooLarge => 413,
            Self::CommandNotFound | Self::BadWorkingDirectory | Self::SpawnFailed => 422,
            Self::Internal => 500,
            Self::ShuttingDown => 503,
        }
    }
}

impl std::fmt::Display for AgentErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The wire name, so logs and CLI output match the JSON.
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_frames_have_the_documented_shape() {
        let out = ExecFrame::Output {
            stream: OutputStream::Stderr,
            data: "err\n".into(),
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"stream":"stderr","data":"err\n"}"#
        );
        let exit = ExecFrame::Exit {
            exit: ExitStatus {
                code: Some(3),
                signal: None,
                timed_out: false,
            },
        };
        assert_eq!(
            serde_json::to_string(&exit).unwrap(),
            r#"{"exit":{"code":3,"signal":null,"timed_out":false}}"#
        );
        let err = ExecFrame::Error {
            error: ErrorBody {
                code: AgentErrorCode::Internal,
                message: "boom".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":"internal","message":"boom"}}"#
        );
        for frame in [out, exit, err] {
            let text = serde_json::to_string(&frame).unwrap();
            assert_eq!(serde_json::from_str::<ExecFrame>(&text).unwrap(), frame);
        }
    }

    #[test]
    fn exec_request_rejects_unknown_fields_and_defaults_the_rest() {
        let r: ExecRequest = serde_json::from_str(r#"{"argv":["true"]}"#).unwrap();
        assert_eq!(r, ExecRequest::new(["true"]));
        assert!(serde_json::from_str::<ExecRequest>(r#"{"argv":["x"],"shell":true}"#).is_err());
    }

    #[test]
    fn error_codes_display_their_wire_name() {
        assert_eq!(AgentErrorCode::ExecDisabled.to_string(), "exec_disabled");
        assert_eq!(AgentErrorCode::TooLarge.http_status(), 413);
    }
}
