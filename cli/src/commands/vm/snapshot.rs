//! One `vm.list` snapshot of every host: the VMs, and the hosts that should have answered but
//! did not.
//!
//! One gather of `vm.list` to the lab-wide subject does it. Each vm-controller's answer names
//! the live controllers it knows (their heartbeats, `peers`) and the lab's members (netd's
//! subnet claims, `members`), so the gather ends as soon as every live controller named by any
//! answer has answered: no discovery, no waiting for silence. Nobody serving `vm.list` ends it
//! at once (`unavailable`). A member that did not answer is named unreachable.
//!
//! An answer without `peers` (a controller older than heartbeats, or one without JetStream or
//! whose view went stale) means nobody knows who is there: that call falls back to
//! discovering the controllers (`$SRV.PING`, which waits for silence) and reading the lab's
//! membership, then gathering again until each found controller answered. So does a ref that
//! the quick gather leaves unresolved: "not found" is only said after discovery.

use std::collections::BTreeSet;
use std::time::Duration;

use banger_bus::client::Enough;
use banger_proto::op::{self, Lab};
use banger_proto::service;
use banger_proto::vm::{self, ListVmsReply, ListVmsRequest, VmInfo};
use banger_proto::{ApiError, ErrorCode};

use super::resolve::{self, Target};
use crate::App;

/// The longest discovery of the controllers waits for a first `$SRV.PING` answer (only in
/// the fallback for answers without `peers`). It returns shortly after the last answer
/// (`banger_bus::client::DISCOVERY_STALL`), and at once when no controller exists (the
/// server's "no responders"), so this only bounds how long a slow controller on a loaded host
/// may take: 1 s was too short for 100 concurrent commands on 2 busy cores (the benchmark saw
/// 3–18 of 100 fail with "no vm-controller answered").
const DISCOVERY_WINDOW: Duration = Duration::from_secs(10);

/// The longest `vm.list` waits for a controller known to be there: listing is a read of a
/// local table, so a controller that has not answered by then is stuck or cut off, and the
/// user should hear about it rather than wait for the full request timeout.
const LIST_DEADLINE: Duration = Duration::from_secs(5);

/// The longest the lab's membership (netd's subnet claims) may take to read in the fallback;
/// read alongside discovery, so it only costs time when the bucket is slow.
const MEMBERS_WAIT: Duration = Duration::from_secs(3);

/// How long a gather waits, once every live controller answered, for a lab member whose
/// controller has no heartbeat: as long as discovery's silence window, so a member that is
/// there but not beating (its JetStream view lost) is still heard, while a member that is cut
/// off costs no more than discovery did.
const MEMBER_GRACE: Duration = banger_bus::client::DISCOVERY_STALL;

/// The VMs that the answering controllers reported.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// VMs, sorted by host then name (only those the refs could name, when fetched for refs).
    pub(crate) vms: Vec<VmInfo>,
    /// Hosts known to be there (a live controller, or a lab member) that did not answer
    /// `vm.list`.
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

/// Gathers every host's VMs: all of them when `refs` is empty, else only those the refs could
/// name (a name, an id, an id prefix; resolve with [`Snapshot::resolve_all`]), which keeps the
/// answers small however many VMs the hosts hold.
///
/// Fails with `unavailable` when no controller is running at all.
pub(crate) async fn fetch(app: &App, refs: &[String]) -> anyhow::Result<Snapshot> {
    let req = ListVmsRequest::matching(refs.iter().cloned());
    let deadline = app.timeout.min(LIST_DEADLINE);
    let replies = app
        .bus
        .gather_until::<op::vm::List>(&Lab, &req, deadline, |out| {
            Known::of(out).map_or(Enough::Yes, |k| k.enough())
        })
        .await?;
    if replies.is_empty() {
        return Err(no_controller().into());
    }
    let Some(known) = Known::of(&replies) else {
        // Somebody does not know who is there, or an answer could not be read (an older
        // controller refusing the refs it does not know): discover as before, unfiltered
        // when an answer was an error.
        let unfiltered = replies.iter().any(Result::is_err);
        let req = if unfiltered {
            ListVmsRequest::default()
        } else {
            req
        };
        return fetch_discovering(app, &req).await;
    };
    announce_simulated(&replies);
    let mut snap = Snapshot {
        membership_unknown: known.members.is_none(),
        ..Snapshot::default()
    };
    let expected: Vec<String> = known
        .peers
        .iter()
        .chain(known.members.iter().flatten())
        .cloned()
        .collect();
    collect(&mut snap, replies, expected);
    if refs
        .iter()
        .any(|r| !snap.vms.iter().any(|v| vm::could_name(r, v)))
    {
        // A ref that names nothing may name a VM of a host that no answer knew of: one whose
        // heartbeat was not renewed yet (back from a network cut) and that is not a known lab
        // member either. Before anything is called missing, look the slow way, discovering who
        // is there; a ref that names something costs nothing more.
        return fetch_discovering(app, &req).await;
    }
    Ok(snap)
}

/// What the answers so far say about who is there; `None` when one of them does not know
/// (or could not be read).
struct Known {
    /// Live controllers named by any answer.
    peers: BTreeSet<String>,
    /// Lab members named by any answer; `None` when no answer knew them.
    members: Option<BTreeSet<String>>,
    /// Hosts that answered.
    answered: BTreeSet<String>,
}

impl Known {
    fn of(replies: &[Result<ListVmsReply, banger_bus::RequestError>]) -> Option<Self> {
        let mut k = Self {
            peers: BTreeSet::new(),
            members: None,
            answered: BTreeSet::new(),
        };
        for r in replies {
            let r = r.as_ref().ok()?;
            k.peers.extend(r.peers.as_ref()?.iter().cloned());
            if let Some(m) = &r.members {
                k.members.get_or_insert_default().extend(m.iter().cloned());
            }
            k.answered.insert(r.host.to_string());
        }
        Some(k)
    }

    /// Whether the gather can end: every live controller and every member answered. A member
    /// without a live controller gets only [`MEMBER_GRACE`] once the live ones are in: its
    /// heartbeat expired, so it is most likely cut off, and waiting [`LIST_DEADLINE`] for it
    /// would make every command on a healthy host that slow while another host is cut off.
    fn enough(&self) -> Enough {
        if !self.peers.is_subset(&self.answered) {
            Enough::No
        } else if self
            .members
            .as_ref()
            .is_none_or(|m| m.is_subset(&self.answered))
        {
            Enough::Yes
        } else {
            Enough::After(MEMBER_GRACE)
        }
    }
}

/// The fallback: discovers the controllers (`$SRV.PING`) and reads the lab's membership, then
/// gathers `vm.list` until every controller found answered.
async fn fetch_discovering(app: &App, req: &ListVmsRequest) -> anyhow::Result<Snapshot> {
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
        return Err(no_controller().into());
    }
    let replies = app
        .bus
        .gather::<op::vm::List>(
            &Lab,
            req,
            Some(controllers.len()),
            app.timeout.min(LIST_DEADLINE),
        )
        .await?;
    let mut snap = Snapshot {
        membership_unknown: members.is_unknown(),
        ..Snapshot::default()
    };
    let expected = controllers
        .iter()
        .filter_map(|c| c.host())
        .chain(members.hosts().iter().map(String::as_str))
        .map(str::to_owned)
        .collect();
    collect(&mut snap, replies, expected);
    Ok(snap)
}

/// Fills `snap` from the answers; each host of `expected` that did not answer is unreachable.
fn collect(
    snap: &mut Snapshot,
    replies: Vec<Result<ListVmsReply, banger_bus::RequestError>>,
    expected: Vec<String>,
) {
    let mut answered = BTreeSet::new();
    for r in replies {
        match r {
            Ok(r) => {
                answered.insert(r.host.to_string());
                snap.vms.extend(r.vms);
            }
            Err(e) => snap.bad_replies.push(e.to_string()),
        }
    }
    let unreachable: BTreeSet<String> = expected
        .into_iter()
        .filter(|h| !answered.contains(h))
        .collect();
    snap.unreachable = unreachable.into_iter().collect();
    snap.vms
        .sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
}

/// The SIMULATED banner, when an answering controller runs the simulator.
fn announce_simulated(replies: &[Result<ListVmsReply, banger_bus::RequestError>]) {
    if replies
        .iter()
        .flatten()
        .any(|r| r.vmm.as_deref() == Some("sim"))
    {
        crate::announce_simulated();
    }
}

fn no_controller() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "no vm-controller answered: is the stack running (`banger up`)?",
    )
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
