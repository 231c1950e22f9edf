//! Lab mode: routes to the other hosts' VM subnets (`<peer subnet> via <peer address>`), over
//! rtnetlink, in the main table.
//!
//! Every route netd installs carries its own route protocol number (`[netd] route_protocol`,
//! 77 by default; `ip route show proto 77` lists them). That mark is how netd finds exactly its
//! own routes again — after a restart, when a peer's subnet or address changed, or on exit —
//! without ever touching a route someone else made.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;

/// `ESRCH`: the route to delete is already gone.
const ESRCH: i32 = libc::ESRCH;

/// Why a route operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket")]
    Connect(#[source] std::io::Error),
    /// A request failed.
    #[error("netlink: {what}")]
    Request {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
}

/// One route: destination subnet and next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRoute {
    /// The peer's VM subnet.
    pub subnet: Ipv4Net,
    /// The peer's host address.
    pub via: Ipv4Addr,
}

/// What to change so the installed routes become the wanted ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to add or replace (a changed next hop is replaced in place).
    pub install: Vec<PeerRoute>,
    /// Routes to delete (their subnet is no longer wanted).
    pub remove: Vec<PeerRoute>,
}

/// Compares the installed routes with the wanted ones.
pub fn plan(have: &[PeerRoute], want: &[PeerRoute]) -> RoutePlan {
    let have_by: BTreeMap<Ipv4Net, BTreeSet<Ipv4Addr>> =
        have.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.subnet).or_default().insert(r.via);
            m
        });
    let want_by: BTreeMap<Ipv4Net, Ipv4Addr> = want.iter().map(|r| (r.subnet, r.via)).collect();
    let mut p = RoutePlan::default();
    for (subnet, via) in &want_by {
        let current = have_by.get(subnet);
        if current.is_none_or(|v| v.len() != 1 || !v.contains(via)) {
            p.install.push(PeerRoute {
                subnet: *subnet,
                via: *via,
            });
        }
        // Duplicates (a second route to the subnet via another hop) go.
        for other in current.into_iter().flatten().filter(|v| *v != via) {
            p.remove.push(PeerRoute {
                subnet: *subnet,
                via: *other,
            });
        }
    }
    for r in have {
        if !want_by.contains_key(&r.subnet) {
            p.remove.push(*r);
        }
    }
    p
}

/// netd's routes, on a netlink connection of their own.
pub struct Routes {
    handle: Handle,
    conn: JoinHandle<()>,
    protocol: u8,
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Routes {
    /// Opens a netlink socket in the calling thread's network namespace (inside a tokio
    /// runtime); routes are marked with `protocol`.
    pub fn connect(protocol: u8) -> Result<Self, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Connect)?;
        Ok(Self {
            handle,
            conn: tokio::spawn(conn),
            protocol,
        })
    }

    /// The routes carrying netd's protocol number, in the main table.
    pub async fn list(&self) -> Result<Vec<PeerRoute>, RouteError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|source| RouteError::Request {
                what: "listing routes".into(),
                source,
            })?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.protocol == RouteProtocol::Other(self.protocol)
                    && m.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .filter_map(parse)
            .collect())
    }

    fn message(&self, r: PeerRoute) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.subnet.network(), r.subnet.prefix_len())
            .gateway(r.via)
            .protocol(RouteProtocol::Other(self.protocol))
            .build()
    }

    /// Adds `r`, replacing a route to the same subnet (same table, metric).
    pub async fn install(&self, r: PeerRoute) -> Result<(), RouteError> {
        self.handle
            .route()
            .add(self.message(r))
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Request {
                what: format!("adding route {} via {}", r.subnet, r.via),
                source,
            })
    }

    /// Deletes `r`; a route already gone is not an error.
    pub async fn remove(&self, r: PeerRoute) -> Result<(), RouteError> {
        match self.handle.route().del(self.message(r)).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == ESRCH => Ok(()),
            Err(source) => Err(RouteError::Request {
                what: format!("deleting route {} via {}", r.subnet, r.via),
                source,
            }),
        }
    }

    /// Makes the installed routes exactly `want`. Every change is tried; a route that cannot be
    /// installed (its next hop unreachable now, say) does not stop the others, and the first
    /// error is returned after the rest are done. Returns the plan it carried out.
    pub async fn sync(&self, want: &[PeerRoute]) -> Result<RoutePlan, RouteError> {
        let have = self.list().await?;
        let p = plan(&have, want);
        let mut first_err = None;
        for r in &p.remove {
            if let Err(e) = self.remove(*r).await {
                first_err.get_or_insert(e);
            }
        }
        for r in &p.install {
            if let Err(e) = self.install(*r).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(p),
        }
    }
}

fn parse(m: &RouteMessage) -> Option<PeerRoute> {
    let mut dst = None;
    let mut via = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
            _ => {}
        }
    }
    Some(PeerRoute {
        subnet: Ipv4Net::new(dst?, m.header.destination_prefix_length).ok()?,
        via: via?,
    })
}

/// Whether `addr` can be a next hop towards a peer at all.
pub fn usable_next_hop(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(subnet: &str, via: [u8; 4]) -> PeerRoute {
        PeerRoute {
            subnet: subnet.parse().unwrap(),
            via: Ipv4Addr::from(via),
        }
    }

    #[test]
    fn nothing_changes_when_the_routes_are_right() {
        let routes = [r("10.77.2.0/24", [192, 0, 2, 2])];
        assert_eq!(plan(&routes, &routes), RoutePlan::default());
    }

    #[test]
    fn new_peers_are_added_gone_ones_removed_and_moved_ones_replaced() {
        let have = [
            r("10.77.2.0/24", [192, 0, 2, 2]),
            r("10.77.3.0/24", [192, 0, 2, 3]),
        ];
        let want = [
            r("10.77.2.0/24", [192, 0, 2, 22]),
            r("10.77.4.0/24", [192, 0, 2, 4]),
        ];
        let p = plan(&have, &want);
        assert_eq!(
            p.install,
            [
                r("10.77.2.0/24", [192, 0, 2, 22]),
                r("10.77.4.0/24", [192, 0, 2, 4])
            ]
        );
        assert_eq!(
            p.remove,
            [
                r("10.77.2.0/24", [192, 0, 2, 2]),
                r("10.77.3.0/24", [192, 0, 2, 3])
            ]
        );
    }

    #[test]
    fn loopback_and_v6_are_no_next_hops() {
        assert!(!usable_next_hop("127.0.0.1".parse().unwrap()));
        assert!(!usable_next_hop("::1".parse().unwrap()));
        assert!(usable_next_hop("192.0.2.1".parse().unwrap()));
    }
}
