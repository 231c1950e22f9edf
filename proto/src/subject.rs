//! Subject builders.
//!
//! Every subject banger uses is built from a configurable prefix (`banger` by default), here or,
//! for a request, by its operation type ([`crate::op::Operation::subject`]):
//!
//! | subject | kind |
//! | --- | --- |
//! | `<p>.vm.create` | request, queue group (placement) |
//! | `<p>.vm.list` | request, scatter-gather (every controller answers) |
//! | `<p>.host.<host>.vm.<op>` | request to one host's vm-controller |
//! | `<p>.host.<host>.net.<op>` | request to one host's netd |
//! | `<p>.host.<host>.store.<op>` | request to one host's stord |
//! | `<p>.dns.<op>` | request to dnsd |
//! | `<p>.events.<host>.vm.<vm_id>.<kind>` | lifecycle event |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::names::{HostId, NameError, VmId};

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "banger";

/// Operations of a host's vm-controller, for code that picks one at run time (the CLI's batch
/// commands and TUI actions: `vm stop a b c`). Everything else names the operation's type in
/// [`crate::op::vm`]; a test there checks each variant has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmOp {
    /// Create a VM on this host (targeted placement).
    Create,
    /// Start a stopped VM.
    Start,
    /// Stop gracefully, then force.
    Stop,
    /// Stop then start.
    Restart,
    /// Stop forcefully at once.
    Kill,
    /// Stop if needed and remove everything.
    Delete,
    /// Change settings applied on next start.
    Set,
    /// Show one VM.
    Get,
    /// Ask the guest agent for health.
    Health,
    /// Read logs.
    Logs,
    /// Resource statistics.
    Stats,
    /// Run a command in the guest.
    Exec,
    /// Mark a VM as used now.
    Touch,
}

macro_rules! op_names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// Every operation, in documentation order.
            pub const ALL: &'static [$t] = &[$(<$t>::$v),*];

            /// The operation's subject token.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

op_names!(VmOp {
    Create => "create", Start => "start", Stop => "stop", Restart => "restart", Kill => "kill",
    Delete => "delete", Set => "set", Get => "get", Health => "health", Logs => "logs",
    Stats => "stats", Exec => "exec", Touch => "touch",
});

/// The name of a JetStream stream or key-value bucket that belongs to the installation under
/// subject `prefix`: the prefix upper-cased, every other character `_`, then `_<suffix>`
/// (`banger` + `EVENTS` -> `BANGER_EVENTS`). JetStream names may not contain `.`, so two
/// installations sharing a server keep apart exactly as their subjects do.
pub fn jetstream_name(prefix: &str, suffix: &str) -> String {
    let p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{p}_{suffix}")
}

/// Builds subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix`: one or more dot-separated tokens of letters, digits, `-` and
    /// `_` (no wildcards, no empty tokens).
    pub fn new(prefix: impl Into<String>) -> Result<Self, NameError> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(NameError::Empty {
                kind: "subject prefix",
            });
        }
        let ok = prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !ok {
            return Err(NameError::BadChar {
                kind: "subject prefix",
                value: prefix,
                allowed: "dot-separated tokens of letters, digits, '-' and '_'",
            });
        }
        Ok(Self { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>.vm.create`: any controller (queue group).
    pub fn vm_create(&self) -> String {
        format!("{}.vm.create", self.prefix)
    }

    /// `<p>.vm.list`: every controller answers.
    pub fn vm_list(&self) -> String {
        format!("{}.vm.list", self.prefix)
    }

    /// `<p>.host.<host>.vm.<op>`.
    pub fn host_vm(&self, host: &HostId, op: VmOp) -> String {
        format!("{}.host.{host}.vm.{op}", self.prefix)
    }

    /// `<p>.events.<host>.vm.<vm_id>.<kind>`.
    pub fn event(&self, host: &HostId, vm: &VmId, kind: EventKind) -> String {
        format!("{}.events.{host}.vm.{vm}.{kind}", self.prefix)
    }

    /// `<p>.events.>`: every event.
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// A filter over events: `None` means any host, VM or kind.
    pub fn events_filter(
        &self,
        host: Option<&HostId>,
        vm: Option<&VmId>,
        kind: Option<EventKind>,
    ) -> String {
        let host = host.map_or("*", HostId::as_str);
        let vm = vm.map_or("*", VmId::as_str);
        let kind = kind.map_or("*", EventKind::as_str);
        format!("{}.events.{host}.vm.{vm}.{kind}", self.prefix)
    }

    /// Parses an event subject back into its host, VM id and kind.
    pub fn parse_event(&self, subject: &str) -> Option<(HostId, VmId, EventKind)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".events.")?;
        let mut parts = rest.split('.');
        let host = HostId::new(parts.next()?).ok()?;
        if parts.next()? != "vm" {
            return None;
        }
        let vm = VmId::new(parts.next()?).ok()?;
        let kind = EventKind::from_wire(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some((host, vm, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostId {
        HostId::new("lab1").unwrap()
    }

    fn vm() -> VmId {
        VmId::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn subjects_follow_the_documented_layout() {
        let s = Subjects::default();
        assert_eq!(s.vm_create(), "banger.vm.create");
        assert_eq!(s.vm_list(), "banger.vm.list");
        assert_eq!(s.host_vm(&host(), VmOp::Stop), "banger.host.lab1.vm.stop");
        // netd's, stord's and dnsd's subjects are their operation types' (`op`): pinned by
        // `op::wire_tests`.
        assert_eq!(
            s.event(&host(), &vm(), EventKind::Started),
            "banger.events.lab1.vm.0123456789abcdef0123456789abcdef.started"
        );
        assert_eq!(s.all_events(), "banger.events.>");
        assert_eq!(
            s.events_filter(None, None, Some(EventKind::Deleted)),
            "banger.events.*.vm.*.deleted"
        );
    }

    #[test]
    fn prefix_is_configurable_and_validated() {
        let s = Subjects::new("lab.a").unwrap();
        assert_eq!(s.vm_list(), "lab.a.vm.list");
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_subjects_parse_back() {
        let s = Subjects::new("x").unwrap();
        for kind in EventKind::ALL {
            let subj = s.event(&host(), &vm(), *kind);
            assert_eq!(s.parse_event(&subj), Some((host(), vm(), *kind)));
        }
        assert_eq!(s.parse_event("x.events.lab1.vm.nope.started"), None);
        assert_eq!(
            s.parse_event("y.events.lab1.vm.0123456789abcdef0123456789abcdef.started"),
            None
        );
    }

    #[test]
    fn op_tokens_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for op in VmOp::ALL {
            assert!(seen.insert(op.as_str()));
        }
    }
}
