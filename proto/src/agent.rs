//! The guest agent's HTTP API (over vsock), shared by the agent and its host-side client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The vsock port the agent listens on by default.
pub const DEFAULT_AGENT_PORT: u32 = 52;

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the agent is serving.
    pub status: String,
    /// Guest uptime, seconds.
    pub uptime_secs: f64,
    /// Guest hostname.
    pub hostname: String,
    /// Agent version.
    pub agent_version: String,
    /// Kernel boot id.
    pub boot_id: String,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Total memory, bytes.
    pub mem_total_bytes: u64,
    /// Available memory, bytes.
    pub mem_available_bytes: u64,
    /// Root filesystem size, bytes.
    pub rootfs_total_bytes: u64,
    /// Root filesystem free, bytes.
    pub rootfs_free_bytes: u64,
}

impl Eq for Health {}

/// An exec request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; never interpreted by a shell.
    pub argv: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes to write to standard input (UTF-8).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The result of a finished exec.
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
