//! The real [`HostNet`]: rtnetlink, the tun ioctls, `nft -j`, `iptables` and `/proc`.

use std::collections::HashSet;

use banger_proto::VmId;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{BridgeSpec, HostNet};
use crate::forward_accept::{Ensured, ForwardAccept, ForwardAcceptError};
use crate::link::{Link, LinkError, Links};
use crate::nat::{Nat, NatError, TableState, VmRules};
use crate::route::{PeerRoute, RouteError, RoutePlan, Routes};
use crate::tap::{self, TapError};

/// Where the kernel's IPv4 forwarding switch lives (per network namespace).
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// This host's kernel, in the network namespace netd was started in.
pub struct Linux {
    /// Netlink (devices).
    pub links: Links,
    /// The nftables table.
    pub nat: Nat,
    /// Routes to the other hosts' VM subnets.
    pub routes: Routes,
    /// Accepts for the bridge in iptables' FORWARD path.
    pub forward: ForwardAccept,
}

impl HostNet for Linux {
    fn list_links(&self) -> BoxFuture<'_, Result<Vec<Link>, LinkError>> {
        self.links.list().boxed()
    }

    fn link_by_name<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Link>, LinkError>> {
        self.links.by_name(name).boxed()
    }

    fn ensure_bridge<'a>(&'a self, b: BridgeSpec<'a>) -> BoxFuture<'a, Result<u32, LinkError>> {
        self.links
            .ensure_bridge(b.name, b.gateway, b.prefix_len, b.mtu)
            .boxed()
    }

    fn create_tap<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), TapError>> {
        let owned = name.to_owned();
        async move {
            tokio::task::spawn_blocking(move || tap::create_persistent(&owned))
                .await
                .map_err(|_| TapError::Task(name.to_owned()))?
        }
        .boxed()
    }

    fn join_bridge(&self, tap: u32, bridge: u32, mtu: u32) -> BoxFuture<'_, Result<(), LinkError>> {
        self.links.join_bridge(tap, bridge, mtu).boxed()
    }

    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<bool, LinkError>> {
        self.links.delete(index).boxed()
    }

    fn delete_links<'a>(
        &'a self,
        names: &'a [String],
        group: u32,
    ) -> BoxFuture<'a, Result<HashSet<String>, LinkError>> {
        self.links.delete_many(names, group).boxed()
    }

    fn delete_ops(&self) -> u64 {
        self.links.delete_ops()
    }

    fn enable_forwarding(&self) -> BoxFuture<'_, Result<(), std::io::Error>> {
        async {
            tokio::task::spawn_blocking(|| {
                if std::fs::read_to_string(IP_FORWARD)?.trim() == "1" {
                    return Ok(());
                }
                tracing::info!("enabling IPv4 forwarding");
                std::fs::write(IP_FORWARD, "1\n")
            })
            .await
            .map_err(std::io::Error::other)?
        }
        .boxed()
    }

    fn rules_state(&self) -> BoxFuture<'_, Result<TableState, NatError>> {
        self.nat.state().boxed()
    }

    fn install_rules<'a>(&'a self, vms: &'a [VmRules]) -> BoxFuture<'a, Result<(), NatError>> {
        self.nat.install(vms).boxed()
    }

    fn replace_vm_rules<'a>(&'a self, vm: &'a VmRules) -> BoxFuture<'a, Result<(), NatError>> {
        self.nat.replace_vm(vm).boxed()
    }

    fn remove_vm_rules<'a>(&'a self, vms: &'a [VmId]) -> BoxFuture<'a, Result<usize, NatError>> {
        self.nat.remove_vms(vms).boxed()
    }

    fn delete_table(&self) -> BoxFuture<'_, Result<(), NatError>> {
        self.nat.delete_table().boxed()
    }

    fn ensure_forward_accepts(&self) -> BoxFuture<'_, Result<Ensured, ForwardAcceptError>> {
        self.forward.ensure().boxed()
    }

    fn remove_forward_accepts(&self) -> BoxFuture<'_, Result<usize, ForwardAcceptError>> {
        self.forward.remove().boxed()
    }

    fn sync_routes<'a>(
        &'a self,
        want: &'a [PeerRoute],
    ) -> BoxFuture<'a, Result<RoutePlan, RouteError>> {
        self.routes.sync(want).boxed()
    }
}
