//! Lab mode: learning the other hosts' VM subnets from the bus and routing to them.
//!
//! Every netd publishes its host id, VM subnet and host address in its service-API metadata
//! (`host`, `subnet`, `host_addr`). Discovery is the service API itself: at start-up and every
//! `peer_interval_secs`, netd sends `$SRV.PING.netd` and reads the metadata of every netd that
//! answers. No extra subject, no announcement to miss: a netd that starts late is found on the
//! next round, one that changed its subnet is seen with the new one.
//!
//! From that table netd wants one route per peer, `<peer subnet> via <peer host address>`
//! ([`crate::route`]), and converges the kernel on it. A peer that stops answering keeps its
//! route for `peer_expiry_secs` (a NATS reconnect or a netd restart must not cut VMs off), then
//! loses it. A peer whose subnet overlaps this host's, or another peer's seen earlier, or
//! whose address is unusable (loopback, none) is skipped with a warning: a wrong route would
//! be worse than none. On exit netd removes all its routes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_bus::client::ServiceInstance;
use banger_bus::runtime::chain;
use banger_bus::shutdown::CancellationToken;
use banger_proto::service::{META_HOST_ADDR, META_SUBNET, NETD};
use ipnet::Ipv4Net;

use crate::route::{PeerRoute, RouteError, usable_next_hop};
use crate::state::Netd;

/// How long one discovery round collects answers.
const DISCOVERY_WAIT: Duration = Duration::from_millis(500);

/// What a peer netd published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its host id.
    pub host: String,
    /// Its VM subnet.
    pub subnet: Ipv4Net,
    /// Its host address (None: it does not know one, so it cannot be routed to).
    pub addr: Option<Ipv4Addr>,
}

impl PeerInfo {
    /// Reads a netd instance's metadata (None: not a netd, or its metadata is malformed).
    pub fn from_instance(i: &ServiceInstance) -> Option<Self> {
        if i.name != NETD {
            return None;
        }
        Some(Self {
            host: i.host()?.to_owned(),
            subnet: i.metadata.get(META_SUBNET)?.parse().ok()?,
            addr: i
                .metadata
                .get(META_HOST_ADDR)
                .and_then(|a| a.parse::<Ipv4Addr>().ok()),
        })
    }
}

/// The peers seen, with when each was last heard of.
#[derive(Default)]
pub struct PeerTable(Mutex<BTreeMap<String, (PeerInfo, Instant)>>);

impl PeerTable {
    /// Records the peers of one discovery round, seen at `now`.
    pub fn saw(&self, peers: impl IntoIterator<Item = PeerInfo>, now: Instant) {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in peers {
            m.insert(p.host.clone(), (p, now));
        }
    }

    /// Peers heard of within `expiry` before `now`; older ones are forgotten.
    pub fn current(&self, now: Instant, expiry: Duration) -> Vec<PeerInfo> {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, (_, seen)| now.saturating_duration_since(*seen) <= expiry);
        m.values().map(|(p, _)| p.clone()).collect()
    }
}

/// The routes this host wants: one per usable peer (see the module docs for what is skipped).
/// Peers are taken in host-id order, so two hosts with overlapping subnets are resolved the
/// same way on every host.
pub fn wanted_routes(me: &str, my_subnet: Ipv4Net, peers: &[PeerInfo]) -> Vec<PeerRoute> {
    let mut sorted: Vec<&PeerInfo> = peers.iter().filter(|p| p.host != me).collect();
    sorted.sort_by(|a, b| a.host.cmp(&b.host));
    let mut out: Vec<PeerRoute> = Vec::new();
    for p in sorted {
        let Some(via) = p.addr.filter(|a| usable_next_hop((*a).into())) else {
            tracing::debug!(host = %p.host, "peer has no usable host address; no route");
            continue;
        };
        let overlaps = |n: &Ipv4Net| n.contains(&p.subnet) || p.subnet.contains(n);
        if overlaps(&my_subnet) || out.iter().any(|r| overlaps(&r.subnet)) {
            tracing::warn!(
                host = %p.host,
                subnet = %p.subnet,
                "peer's VM subnet overlaps this host's or another peer's; not routing to it"
            );
            continue;
        }
        if p.subnet.contains(&via) {
            tracing::warn!(host = %p.host, "peer's host address lies in its own VM subnet");
            continue;
        }
        out.push(PeerRoute {
            subnet: p.subnet,
            via,
        });
    }
    out
}

/// One round: asks every netd for its metadata, then converges the routes.
pub async fn refresh(netd: &Netd) -> Result<(), RouteError> {
    match netd.bus.ping(Some(NETD), DISCOVERY_WAIT).await {
        Ok(instances) => netd.peers.saw(
            instances.iter().filter_map(PeerInfo::from_instance),
            Instant::now(),
        ),
        Err(e) => {
            tracing::debug!(error = %chain(&e), "peer discovery failed; keeping what is known")
        }
    }
    let current = netd.peers.current(Instant::now(), netd.cfg.peers.expiry);
    let want = wanted_routes(netd.host.as_str(), netd.cfg.subnet, &current);
    let done = netd.kernel.sync_routes(&want).await?;
    for r in &done.install {
        tracing::info!(subnet = %r.subnet, via = %r.via, "route to a peer host installed");
    }
    for r in &done.remove {
        tracing::info!(subnet = %r.subnet, via = %r.via, "route to a peer host removed");
    }
    Ok(())
}

/// Refreshes every `peer_interval_secs` until `shutdown` (the first round at once).
pub async fn periodic(netd: Arc<Netd>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(netd.cfg.peers.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = refresh(&netd).await {
            tracing::warn!(error = %chain(&e), "routing to peer hosts failed; will retry");
        }
    }
}

/// Removes every route netd installed (on exit).
pub async fn remove_all(netd: &Netd) -> Result<usize, RouteError> {
    let done = netd.kernel.sync_routes(&[]).await?;
    Ok(done.remove.len())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn peer(host: &str, subnet: &str, addr: Option<[u8; 4]>) -> PeerInfo {
        PeerInfo {
            host: host.into(),
            subnet: subnet.parse().unwrap(),
            addr: addr.map(Ipv4Addr::from),
        }
    }

    #[test]
    fn metadata_of_a_netd_becomes_a_peer() {
        let i = ServiceInstance {
            name: NETD.into(),
            id: "x".into(),
            version: "0".into(),
            metadata: HashMap::from([
                ("host".into(), "h2".into()),
                ("subnet".into(), "10.77.2.0/24".into()),
                ("host_addr".into(), "192.0.2.2".into()),
            ]),
        };
        assert_eq!(
            PeerInfo::from_instance(&i),
            Some(peer("h2", "10.77.2.0/24", Some([192, 0, 2, 2])))
        );
        let other = ServiceInstance {
            name: "stord".into(),
            ..i
        };
        assert_eq!(PeerInfo::from_instance(&other), None);
    }

    #[test]
    fn one_route_per_usable_peer() {
        let me: Ipv4Net = "10.77.1.0/24".parse().unwrap();
        let peers = [
            peer("h1", "10.77.1.0/24", Some([192, 0, 2, 1])), // me
            peer("h2", "10.77.2.0/24", Some([192, 0, 2, 2])),
            peer("h3", "10.77.3.0/24", None), // no address
            peer("h4", "10.77.1.128/25", Some([192, 0, 2, 4])), // overlaps me
            peer("h5", "10.77.2.0/23", Some([192, 0, 2, 5])), // overlaps h2
            peer("h6", "10.77.6.0/24", Some([127, 0, 0, 1])), // loopback
            peer("h7", "10.77.7.0/24", Some([192, 0, 2, 7])),
        ];
        let got = wanted_routes("h1", me, &peers);
        let subnets: Vec<String> = got.iter().map(|r| r.subnet.to_string()).collect();
        assert_eq!(subnets, ["10.77.2.0/24", "10.77.7.0/24"]);
    }

    #[test]
    fn silent_peers_expire() {
        let t = PeerTable::default();
        let start = Instant::now();
        t.saw([peer("h2", "10.77.2.0/24", Some([192, 0, 2, 2]))], start);
        let later = start + Duration::from_secs(30);
        t.saw([peer("h3", "10.77.3.0/24", Some([192, 0, 2, 3]))], later);
        assert_eq!(t.current(later, Duration::from_secs(60)).len(), 2);
        let hosts: Vec<String> = t
            .current(later + Duration::from_secs(45), Duration::from_secs(60))
            .into_iter()
            .map(|p| p.host)
            .collect();
        assert_eq!(hosts, ["h3"]);
    }
}
