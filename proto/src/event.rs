//! Lifecycle events, published by vm-controller on `<p>.events.<host>.vm.<vm_id>.<kind>`.
//!
//! Every event carries the full VM snapshot so consumers (dnsd, netd, `banger events`, a
//! plain `nats sub`) never need a second round trip. Trace context travels in the NATS
//! headers, not in the body.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::vm::VmInfo;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A record was created.
    Created,
    /// A start began.
    Starting,
    /// The guest was started: DNS and NAT react.
    Started,
    /// A stop began.
    Stopping,
    /// The VM stopped: netd removes the tap, dnsd the record.
    Stopped,
    /// The VM and its resources were removed.
    Deleted,
    /// An operation failed; the snapshot's `reason` says why.
    Failed,
    /// The agent's health changed.
    Health,
}

impl EventKind {
    /// Every kind.
    pub const ALL: &'static [EventKind] = &[
        Self::Created,
        Self::Starting,
        Self::Started,
        Self::Stopping,
        Self::Stopped,
        Self::Deleted,
        Self::Failed,
        Self::Health,
    ];

    /// The kind's subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Started => "started",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
            Self::Health => "health",
        }
    }

    /// Parses a subject token.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of a lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Per-host sequence number, increasing by one per event, so a watcher can tell order and
    /// spot gaps.
    pub seq: u64,
    /// The VM after the transition.
    pub vm: VmInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_wire(k.as_str()), Some(*k));
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{k}\""));
        }
        assert_eq!(EventKind::from_wire("exploded"), None);
    }
}
