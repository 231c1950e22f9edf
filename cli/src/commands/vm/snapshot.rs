//! One `vm.list` snapshot of every host: the VMs, and the hosts whose controller was found
//! (`$SRV.PING`) but did not answer.

use std::time::Duration;

use banger_proto::op::{self, Lab};
use banger_proto::service;
use banger_proto::vm::{ListVmsRequest, VmInfo};
use banger_proto::{ApiError, ErrorCode};

use super::resolve::{self, Target};
use crate::App;

/// The longest discovery of the controllers waits for a first `$SRV.PING` answer. It returns
/// shortly after the last answer (`banger_bus::client::DISCOVERY_STALL`), and at once when no
/// controller exists (the server's "no responders"), so this only bounds how long a slow
/// controller on a loaded host may take: 1 s was too short for 100 concurrent commands on
/// 2 busy cores (the benchmark saw 3–18 of 100 fail with "no vm-controller answered").
const DISCOVERY_WINDOW: Duration = Duration::from_secs(10);

/// The longest `vm.list` waits for a found controller: listing is a read of a local table,
/// so a controller that has not answered by then is stuck or cut off, and the user should
/// hear about it rather than wait for the full request timeout.
const LIST_DEADLINE: Duration = Duration::from_secs(5);

/// The longest the lab's membership (netd's subnet claims) may take to read; read alongside
/// discovery, so it only costs time when the bucket is slow.
const MEMBERS_WAIT: Duration = Duration::from_secs(3);

/// Every VM that the answering controllers reported.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// VMs, sorted by host then name.
    pub(crate) vms: Vec<VmInfo>,
    /// Hosts whose controller was discovered but did not answer `vm.list`.
    pub(crate) unreachable: Vec<String>,
    /// Answers that could not be read (an error reply or a reply of another shape).
    pub(crate) bad_replies: Vec<String>,
    /// The lab's membership could not be read: hosts that answer nothing at all (cut off)
    /// cannot be named, so the list may be incomplete without anyone named unreachable.
    pub(crate) membership_unknown: bool,
}

impl Snapshot {
    /// Resolves references against this snapshot (see [`resolve::resolve_all`]).
    pub(crate) fn resolve_all(&self, references: &[String]) -> Vec<Target> {
        resolve::resolve_all(references, &self.vms, &self.unreachable)
    }

    /// Resolves one reference; the error carries `not_found` or `ambiguous`.
    pub(crate) fn resolve_one(&self, reference: &str) -> Result<VmInfo, ApiError> {
        resolve::resolve_one(reference, &self.vms, &self.unreachable).map_err(|e| e.to_api())
    }
}

/// Discovers the controllers and gathers their `vm.list` answers. A lab member (a host with a
/// subnet claim, [`banger_bus::lab::lab_hosts`]) that no controller answered for is named
/// unreachable too: a host cut off from the bus answers no discovery either.
///
/// Fails with `unavailable` when no controller is running at all.
pub(crate) async fn fetch(app: &App) -> anyhow::Result<Snapshot> {
    let (controllers, members) = tokio::join!(
        app.bus.ping(
            Some(service::VM_CONTROLLER),
            app.timeout.min(DISCOVERY_WINDOW)
        ),
        banger_bus::lab::membership(&app.bus, MEMBERS_WAIT)
    );
    let controllers = controllers?;
    crate::announce_simulated_controllers(&controllers);
    if controllers.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "no vm-controller answered: is the stack running (`banger up`)?",
        )
        .into());
    }
    let replies = app
        .bus
        .gather::<op::vm::List>(
            &Lab,
            &ListVmsRequest::default(),
            Some(controllers.len()),
            app.timeout.min(LIST_DEADLINE),
        )
        .await?;
    let mut snap = Snapshot {
        membership_unknown: members.is_unknown(),
        ..Snapshot::default()
    };
    let mut answered = Vec::new();
    for r in replies {
        match r {
            Ok(r) => {
                answered.push(r.host.to_string());
                snap.vms.extend(r.vms);
            }
            Err(e) => snap.bad_replies.push(e.to_string()),
        }
    }
    let mut unreachable: Vec<String> = controllers
        .iter()
        .filter_map(|c| c.host())
        .chain(members.hosts().iter().map(String::as_str))
        .filter(|h| !answered.iter().any(|a| a == h))
        .map(str::to_owned)
        .collect();
    unreachable.sort();
    unreachable.dedup();
    snap.unreachable = unreachable;
    snap.vms
        .sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
    Ok(snap)
}

impl Snapshot {
    /// Whether the snapshot may miss VMs: a host did not answer, an answer could not be read,
    /// or the lab's membership is unknown.
    pub(crate) fn is_partial(&self) -> bool {
        !self.unreachable.is_empty() || !self.bad_replies.is_empty() || self.membership_unknown
    }
}

/// Warns on stderr about hosts that did not answer, answers that could not be read, and an
/// unknown lab membership.
pub(crate) fn warn_incomplete(snap: &Snapshot) {
    if snap.membership_unknown {
        eprintln!(
            "warning: lab membership unknown (its JetStream bucket could not be read): hosts \
             that answer nothing at all are not named, and their VMs are not shown"
        );
    }
    for h in &snap.unreachable {
        eprintln!("warning: host {h} did not answer vm.list; its VMs are not shown");
    }
    for e in &snap.bad_replies {
        eprintln!("warning: unreadable vm.list answer: {e}");
    }
}
