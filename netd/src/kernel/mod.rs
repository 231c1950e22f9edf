//! The kernel side of netd behind one trait, so attach, detach, reconciliation and the exit
//! policy decide without touching the kernel themselves.
//!
//! [`HostNet`] is every kernel call those decisions make: interfaces and taps (rtnetlink and
//! the tun ioctls), the one nftables table, the iptables `FORWARD` accepts, the routes to peer
//! hosts and the IPv4 forwarding switch. [`Linux`] is the real one (it only delegates to
//! [`crate::link`], [`crate::tap`], [`crate::nat`], [`crate::forward_accept`] and
//! [`crate::route`], where the kernel details live); a recording double keeps an in-memory
//! model of the same state and a log of the calls, so the decisions are unit-tested without
//! root (`kernel/recording.rs`, `kernel/decisions.rs`). The root integration tests in
//! `netd/tests/` drive [`Linux`] in private network namespaces.

#[cfg(test)]
mod decisions;
mod linux;
#[cfg(test)]
pub mod recording;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use banger_proto::VmId;
use futures::future::BoxFuture;

pub use self::linux::{IP_FORWARD, Linux};
use crate::forward_accept::{Ensured, ForwardAcceptError};
use crate::link::{Link, LinkError};
use crate::nat::{NatError, TableState, VmRules};
use crate::route::{PeerRoute, RouteError, RoutePlan};
use crate::tap::TapError;

/// The bridge netd keeps: its name, the gateway address on it, and the MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeSpec<'a> {
    /// Interface name.
    pub name: &'a str,
    /// The gateway address, put on the bridge.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// MTU of the bridge and its taps.
    pub mtu: u32,
}

/// Every kernel call netd's decisions make. Methods that remove something succeed when it is
/// already gone (and say so in their result), so a teardown can be repeated.
pub trait HostNet: Send + Sync + 'static {
    /// Every network device.
    fn list_links(&self) -> BoxFuture<'_, Result<Vec<Link>, LinkError>>;

    /// The device called `name`, if any.
    fn link_by_name<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Link>, LinkError>>;

    /// Makes sure the bridge exists with its address and MTU and is up; returns its index.
    fn ensure_bridge<'a>(&'a self, bridge: BridgeSpec<'a>)
    -> BoxFuture<'a, Result<u32, LinkError>>;

    /// Creates the persistent tap `name` (kept when it exists and is not busy).
    fn create_tap<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), TapError>>;

    /// Puts device `tap` on bridge `bridge` with `mtu` and sets it up.
    fn join_bridge(&self, tap: u32, bridge: u32, mtu: u32) -> BoxFuture<'_, Result<(), LinkError>>;

    /// Deletes one device; `false` when it was already gone.
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<bool, LinkError>>;

    /// Deletes the devices called `names` in as few kernel operations as possible (moved into
    /// netdevice group `group`, then one group delete); returns the names that existed.
    fn delete_links<'a>(
        &'a self,
        names: &'a [String],
        group: u32,
    ) -> BoxFuture<'a, Result<HashSet<String>, LinkError>>;

    /// How many kernel delete operations were issued so far (batching is measured with it).
    fn delete_ops(&self) -> u64;

    /// Turns IPv4 forwarding on (nothing when it is on).
    fn enable_forwarding(&self) -> BoxFuture<'_, Result<(), std::io::Error>>;

    /// What banger's nftables table holds now.
    fn rules_state(&self) -> BoxFuture<'_, Result<TableState, NatError>>;

    /// Recreates the whole table with the rules of `vms`, atomically.
    fn install_rules<'a>(&'a self, vms: &'a [VmRules]) -> BoxFuture<'a, Result<(), NatError>>;

    /// Replaces one VM's rules; [`NatError::Incomplete`] when the table is not fully there.
    fn replace_vm_rules<'a>(&'a self, vm: &'a VmRules) -> BoxFuture<'a, Result<(), NatError>>;

    /// Removes the rules of `vms`; returns how many went. Rules (or a table) already gone are
    /// skipped, not an error.
    fn remove_vm_rules<'a>(&'a self, vms: &'a [VmId]) -> BoxFuture<'a, Result<usize, NatError>>;

    /// Deletes the table; absent is fine.
    fn delete_table(&self) -> BoxFuture<'_, Result<(), NatError>>;

    /// Adds the accepts for the bridge to iptables' `FORWARD` path when its policy drops.
    fn ensure_forward_accepts(&self) -> BoxFuture<'_, Result<Ensured, ForwardAcceptError>>;

    /// Removes those accepts; returns how many went.
    fn remove_forward_accepts(&self) -> BoxFuture<'_, Result<usize, ForwardAcceptError>>;

    /// Converges netd's routes to peer hosts on `want`; returns what changed.
    fn sync_routes<'a>(
        &'a self,
        want: &'a [PeerRoute],
    ) -> BoxFuture<'a, Result<RoutePlan, RouteError>>;
}
