//! Who is there: this controller's heartbeat, and what it knows of the others.
//!
//! Every [`BEAT`] the controller puts its key (its host id; value: a
//! [`ControllerBeat`](banger_proto::vm::ControllerBeat)) into the controllers bucket
//! ([`banger_proto::vm::controller_bucket`]), whose values expire after [`MAX_AGE`]; on a
//! clean stop it deletes the key. In the same beat it reads that bucket (the live controllers)
//! and the lab's membership (netd's subnet claims), and keeps both in a [`Presence`]. Its
//! `vm.list` answers carry them, so the CLI ends a gather as soon as every live controller has
//! answered, instead of waiting for silence after a `$SRV.PING` discovery.
//!
//! A view older than [`MAX_AGE`] (JetStream unreachable, no quorum) is not reported: the CLI
//! then discovers the controllers itself, as it did before heartbeats. Without JetStream there
//! is never a view.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_bus::Bus;
use banger_bus::heartbeat::Heartbeat;
use banger_bus::kv::LabReplicas;
use banger_bus::lab::{self, BucketRead, Membership};
use banger_bus::shutdown::CancellationToken;
use banger_proto::HostId;
use banger_proto::vm::{ControllerBeat, ListVmsReply, controller_bucket, name_bucket};

/// How often a controller beats.
pub const BEAT: Duration = Duration::from_secs(2);

/// How long a beat lives in the bucket: three beats and a half, so one late or lost beat
/// does not make a live controller vanish.
pub const MAX_AGE: Duration = Duration::from_millis(7_000);

/// The longest one beat's reads may take (they retry within it).
const READ_WAIT: Duration = Duration::from_secs(1);

/// The longest the final delete may take at shutdown.
const REMOVE_WAIT: Duration = Duration::from_secs(1);

/// What this controller last knew of the others; cheap to clone, every clone the same view.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    view: Arc<Mutex<View>>,
}

#[derive(Debug, Default)]
struct View {
    /// Live controllers' hosts (this one included) and when they were read.
    peers: Option<(Vec<String>, Instant)>,
    /// The lab's members (empty: not a lab) and when they were read.
    members: Option<(Vec<String>, Instant)>,
}

impl Presence {
    /// The live controllers' hosts, when known and fresh.
    pub fn peers(&self) -> Option<Vec<String>> {
        fresh(&self.lock().peers)
    }

    /// The lab's members (empty when not a lab), when known and fresh.
    pub fn members(&self) -> Option<Vec<String>> {
        fresh(&self.lock().members)
    }

    /// Adds what is known to a `vm.list` answer.
    pub fn fill(&self, reply: &mut ListVmsReply) {
        reply.peers = self.peers();
        // Members are only worth reporting with the peers: without them the caller falls
        // back to reading the membership itself.
        reply.members = reply.peers.as_ref().and_then(|_| self.members());
    }

    fn set_peers(&self, peers: Vec<String>) {
        self.lock().peers = Some((peers, Instant::now()));
    }

    fn set_members(&self, members: Vec<String>) {
        self.lock().members = Some((members, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        // A poisoned view is still a view: every write replaces a whole field.
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn fresh(v: &Option<(Vec<String>, Instant)>) -> Option<Vec<String>> {
    v.as_ref()
        .filter(|(_, at)| at.elapsed() < MAX_AGE)
        .map(|(hosts, _)| hosts.clone())
}

/// Beats for `host` (running hypervisor `vmm`) until `shutdown`, then deletes its key.
pub async fn run(
    bus: Bus,
    host: HostId,
    vmm: &'static str,
    presence: Presence,
    shutdown: CancellationToken,
) {
    let bucket = controller_bucket(bus.subjects().prefix());
    let mut heartbeat: Option<Heartbeat> = None;
    // Whether the last beat was written: changes are logged, not every failed beat.
    let mut beating = false;
    // The controllers' buckets known to have the lab's replicas.
    let mut settled = Vec::new();
    loop {
        if heartbeat.is_none() {
            match Heartbeat::open(&bus, &bucket, host.as_str(), MAX_AGE).await {
                Ok(h) => heartbeat = Some(h),
                Err(e) => tracing::debug!(error = %e, "no heartbeat bucket (no JetStream?)"),
            }
        }
        if let Some(h) = &heartbeat {
            let now = beat(&bus, h, &host, vmm, &bucket, &presence).await;
            if now != beating {
                tracing::info!(bucket, beating = now, "heartbeat");
                beating = now;
            }
            if now {
                follow_lab_replicas(&bus, &mut settled).await;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(BEAT) => {}
        }
    }
    if let Some(h) = heartbeat {
        match tokio::time::timeout(REMOVE_WAIT, h.remove()).await {
            Ok(Ok(())) => tracing::debug!("heartbeat key deleted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "deleting the heartbeat key"),
            Err(_) => tracing::warn!("deleting the heartbeat key timed out; it expires"),
        }
    }
}

/// Gives the controllers' buckets (heartbeats, VM names) the replicas of the lab's subnet
/// bucket, once each: one made before any netd had made the subnet bucket has 1, and would be
/// lost with its node (no host could then tell who is alive, or claim a VM name). Every
/// controller tries, at every beat until it is done; the first to find a bucket short raises
/// it. `settled`: the buckets found right.
async fn follow_lab_replicas(bus: &Bus, settled: &mut Vec<String>) {
    let prefix = bus.subjects().prefix();
    for bucket in [controller_bucket(prefix), name_bucket(prefix)] {
        if settled.contains(&bucket) {
            continue;
        }
        match banger_bus::kv::follow_lab_replicas(bus, &bucket).await {
            Ok(LabReplicas::Raised { from, to }) => {
                tracing::info!(
                    bucket,
                    from,
                    to,
                    "raised the bucket's replicas to the lab's"
                );
                settled.push(bucket);
            }
            Ok(LabReplicas::Enough) => settled.push(bucket),
            // There may be a lab later (its first netd is starting); nothing to follow for the
            // other bucket either this beat.
            Ok(LabReplicas::NoLab) => break,
            // Not made yet (the name directory opens its bucket on first use), or unreachable.
            Err(e) => tracing::debug!(bucket, error = %e, "checking the bucket's replicas"),
        }
    }
}

/// One beat: put this controller's key, then read the live controllers and the members.
/// Whether the key was written.
async fn beat(
    bus: &Bus,
    h: &Heartbeat,
    host: &HostId,
    vmm: &str,
    bucket: &str,
    presence: &Presence,
) -> bool {
    let value = ControllerBeat {
        host: host.clone(),
        vmm: vmm.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        at_ms: banger_bus::now_ms(),
    };
    let put = match serde_json::to_vec(&value) {
        Ok(v) => h.beat(v).await,
        Err(e) => {
            tracing::warn!(error = %e, "encoding the heartbeat");
            return false;
        }
    };
    if let Err(e) = put {
        tracing::debug!(error = %e, "heartbeat not written");
        return false;
    }
    let (controllers, members) = tokio::join!(
        lab::read_bucket(bus, bucket, READ_WAIT),
        lab::membership(bus, READ_WAIT)
    );
    if let BucketRead::Values(values) = controllers {
        presence.set_peers(live_hosts(host, &values));
    }
    match members {
        Membership::NotALab => presence.set_members(Vec::new()),
        Membership::Members(m) => presence.set_members(m),
        Membership::Unknown => {}
    }
    true
}

/// The hosts of the beats in `values`, this one always included, sorted.
fn live_hosts(me: &HostId, values: &[Vec<u8>]) -> Vec<String> {
    let mut hosts: Vec<String> = values
        .iter()
        .filter_map(|v| serde_json::from_slice::<ControllerBeat>(v).ok())
        .map(|b| b.host.to_string())
        .chain(std::iter::once(me.to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_hosts_include_this_one_and_skip_what_is_not_a_beat() {
        let beat = |h: &str| {
            serde_json::to_vec(&ControllerBeat {
                host: HostId::new(h).unwrap(),
                vmm: "sim".into(),
                version: "0".into(),
                at_ms: 1,
            })
            .unwrap()
        };
        let me = HostId::new("h2").unwrap();
        let hosts = live_hosts(&me, &[beat("h3"), b"garbage".to_vec(), beat("h1")]);
        assert_eq!(hosts, ["h1", "h2", "h3"]);
    }

    #[test]
    fn a_view_is_reported_only_while_fresh_and_members_only_with_peers() {
        let p = Presence::default();
        let mut reply = ListVmsReply::new(HostId::new("h1").unwrap(), vec![]);
        p.set_members(vec!["h1".into()]);
        p.fill(&mut reply);
        assert_eq!((reply.peers.clone(), reply.members.clone()), (None, None));
        p.set_peers(vec!["h1".into(), "h2".into()]);
        p.fill(&mut reply);
        assert_eq!(
            reply.peers.as_deref(),
            Some(&["h1".to_owned(), "h2".to_owned()][..])
        );
        assert_eq!(reply.members.as_deref(), Some(&["h1".to_owned()][..]));
        // An old view is not reported.
        p.lock().peers = Some((vec!["h1".into()], Instant::now() - MAX_AGE));
        assert_eq!(p.peers(), None);
    }
}
