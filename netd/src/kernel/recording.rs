//! A recording [`HostNet`] for unit tests: an in-memory model of the devices, the nftables
//! table, the iptables accepts and the routes, a log of every call that changes something, and
//! failures injected per operation. Like the kernel, it forgets a tap's rules only when asked,
//! and treats removing something already gone as done.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use banger_proto::VmId;
use futures::FutureExt;
use futures::future::BoxFuture;
use rtnetlink::packet_route::link::InfoKind;

use super::{BridgeSpec, HostNet};
use crate::forward_accept::{Ensured, ForwardAcceptError};
use crate::link::{Link, LinkError};
use crate::nat::{NatError, TableState, VmRules};
use crate::route::{PeerRoute, RouteError, RoutePlan, plan};
use crate::tap::TapError;

/// A call that changed (or tried to change) kernel state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `ensure_bridge`, with the bridge's name.
    EnsureBridge(String),
    /// `create_tap`.
    CreateTap(String),
    /// `join_bridge`, with the tap's name.
    JoinBridge(String),
    /// `delete_link`, with the device's name (or index, when unknown).
    DeleteLink(String),
    /// `delete_links`, with the names asked for.
    DeleteLinks(Vec<String>),
    /// `enable_forwarding`.
    EnableForwarding,
    /// `install_rules`, with the VMs whose rules the new table holds.
    InstallRules(Vec<VmId>),
    /// `replace_vm_rules`.
    ReplaceVmRules(VmId),
    /// `remove_vm_rules`.
    RemoveVmRules(Vec<VmId>),
    /// `delete_table`.
    DeleteTable,
    /// `ensure_forward_accepts`.
    EnsureForwardAccepts,
    /// `remove_forward_accepts`.
    RemoveForwardAccepts,
    /// `sync_routes`.
    SyncRoutes(Vec<PeerRoute>),
}

/// An operation that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `create_tap`.
    CreateTap,
    /// `join_bridge`.
    JoinBridge,
    /// `delete_links`.
    DeleteLinks,
    /// `replace_vm_rules`.
    ReplaceVmRules,
    /// `remove_vm_rules`.
    RemoveVmRules,
}

/// The modelled kernel state.
#[derive(Debug, Default)]
pub struct World {
    /// Devices by name.
    pub links: BTreeMap<String, Link>,
    /// The table's per-VM rules; `None`: no table.
    pub table: Option<BTreeMap<VmId, VmRules>>,
    /// Whether the iptables accepts are in place.
    pub forward_accepts: bool,
    /// netd's routes.
    pub routes: Vec<PeerRoute>,
    next_index: u32,
    delete_ops: u64,
}

impl World {
    /// Adds a device (as another program, or an earlier netd, would have).
    pub fn add_link(&mut self, name: &str, kind: InfoKind, master: Option<u32>) -> u32 {
        self.next_index += 1;
        let index = self.next_index + 100;
        self.links.insert(
            name.to_owned(),
            Link {
                index,
                name: name.to_owned(),
                master,
                group: 0,
                up: true,
                kind: Some(kind),
                mtu: None,
            },
        );
        index
    }

    /// The per-VM rules in the table (empty when there is no table).
    pub fn rule_vms(&self) -> Vec<VmId> {
        self.table
            .as_ref()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of the devices with banger's tap prefix.
    pub fn taps(&self) -> Vec<String> {
        self.links
            .keys()
            .filter(|n| n.starts_with(crate::lease::TAP_PREFIX))
            .cloned()
            .collect()
    }
}

/// The recording double.
#[derive(Debug, Default)]
pub struct Recording {
    world: Mutex<World>,
    calls: Mutex<Vec<Call>>,
    failing: Mutex<HashSet<Op>>,
    /// Devices whose deletion fails (with every other device of the same call).
    undeletable: Mutex<HashSet<String>>,
}

fn injected() -> std::io::Error {
    std::io::Error::other("injected failure")
}

impl Recording {
    /// Runs `f` on the modelled state.
    pub fn world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().unwrap())
    }

    /// Every recorded call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// The kernel delete operations so far.
    pub fn delete_ops_now(&self) -> u64 {
        self.world(|w| w.delete_ops)
    }

    /// Makes `op` fail from now on.
    pub fn fail(&self, op: Op) {
        self.failing.lock().unwrap().insert(op);
    }

    /// Makes every deletion that includes device `name` fail, as a kernel refusing one device
    /// fails the whole group delete.
    pub fn fail_deleting(&self, name: &str) {
        self.undeletable.lock().unwrap().insert(name.to_owned());
    }

    /// Makes `op` succeed again.
    pub fn heal(&self, op: Op) {
        self.failing.lock().unwrap().remove(&op);
    }

    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }

    fn fails(&self, op: Op) -> bool {
        self.failing.lock().unwrap().contains(&op)
    }

    fn nat_fail(what: &'static str) -> NatError {
        NatError::Nft {
            what,
            detail: "injected failure".into(),
        }
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    futures::future::ready(v).boxed()
}

impl HostNet for Recording {
    fn list_links(&self) -> BoxFuture<'_, Result<Vec<Link>, LinkError>> {
        ready(Ok(self.world(|w| w.links.values().cloned().collect())))
    }

    fn link_by_name<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Link>, LinkError>> {
        ready(Ok(self.world(|w| w.links.get(name).cloned())))
    }

    fn ensure_bridge<'a>(&'a self, b: BridgeSpec<'a>) -> BoxFuture<'a, Result<u32, LinkError>> {
        self.record(Call::EnsureBridge(b.name.to_owned()));
        ready(Ok(self.world(|w| match w.links.get(b.name) {
            Some(l) => l.index,
            None => w.add_link(b.name, InfoKind::Bridge, None),
        })))
    }

    fn create_tap<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), TapError>> {
        self.record(Call::CreateTap(name.to_owned()));
        if self.fails(Op::CreateTap) {
            return ready(Err(TapError::Open(injected())));
        }
        self.world(|w| {
            if !w.links.contains_key(name) {
                w.add_link(name, InfoKind::Tun, None);
            }
        });
        ready(Ok(()))
    }

    fn join_bridge(
        &self,
        tap: u32,
        bridge: u32,
        _mtu: u32,
    ) -> BoxFuture<'_, Result<(), LinkError>> {
        let name = self.world(|w| {
            w.links
                .values()
                .find(|l| l.index == tap)
                .map(|l| l.name.clone())
        });
        self.record(Call::JoinBridge(name.clone().unwrap_or_default()));
        if self.fails(Op::JoinBridge) {
            return ready(Err(LinkError::Connect(injected())));
        }
        let Some(name) = name else {
            return ready(Err(LinkError::Vanished(tap.to_string())));
        };
        self.world(|w| {
            if let Some(l) = w.links.get_mut(&name) {
                l.master = Some(bridge);
            }
        });
        ready(Ok(()))
    }

    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<bool, LinkError>> {
        let gone = self.world(|w| {
            w.delete_ops += 1;
            let name = w
                .links
                .values()
                .find(|l| l.index == index)
                .map(|l| l.name.clone());
            name.inspect(|n| {
                w.links.remove(n);
            })
        });
        self.record(Call::DeleteLink(
            gone.clone().unwrap_or_else(|| index.to_string()),
        ));
        ready(Ok(gone.is_some()))
    }

    fn delete_links<'a>(
        &'a self,
        names: &'a [String],
        _group: u32,
    ) -> BoxFuture<'a, Result<HashSet<String>, LinkError>> {
        if names.is_empty() {
            return ready(Ok(HashSet::new()));
        }
        self.record(Call::DeleteLinks(names.to_vec()));
        let undeletable = {
            let refused = self.undeletable.lock().unwrap();
            names.iter().any(|n| refused.contains(n))
        };
        if self.fails(Op::DeleteLinks) || undeletable {
            return ready(Err(LinkError::Connect(injected())));
        }
        ready(Ok(self.world(|w| {
            w.delete_ops += 1;
            names
                .iter()
                .filter(|n| w.links.remove(n.as_str()).is_some())
                .cloned()
                .collect()
        })))
    }

    fn delete_ops(&self) -> u64 {
        self.world(|w| w.delete_ops)
    }

    fn enable_forwarding(&self) -> BoxFuture<'_, Result<(), std::io::Error>> {
        self.record(Call::EnableForwarding);
        ready(Ok(()))
    }

    fn rules_state(&self) -> BoxFuture<'_, Result<TableState, NatError>> {
        let state = self.world(|w| match &w.table {
            None => TableState::default(),
            Some(t) => {
                let mut handle = 0;
                TableState {
                    present: true,
                    base_complete: true,
                    vm_rules: t
                        .values()
                        .filter(|v| !v.forwards.is_empty())
                        .map(|v| {
                            // Two rules per forward: prerouting and output.
                            let rules = (0..v.forwards.len() * 2)
                                .map(|i| {
                                    handle += 1;
                                    let chain = if i % 2 == 0 { "prerouting" } else { "output" };
                                    (chain.to_owned(), handle)
                                })
                                .collect();
                            (v.vm.clone(), rules)
                        })
                        .collect(),
                }
            }
        });
        ready(Ok(state))
    }

    fn install_rules<'a>(&'a self, vms: &'a [VmRules]) -> BoxFuture<'a, Result<(), NatError>> {
        self.record(Call::InstallRules(
            vms.iter().map(|v| v.vm.clone()).collect(),
        ));
        self.world(|w| {
            w.table = Some(vms.iter().map(|v| (v.vm.clone(), v.clone())).collect());
        });
        ready(Ok(()))
    }

    fn replace_vm_rules<'a>(&'a self, vm: &'a VmRules) -> BoxFuture<'a, Result<(), NatError>> {
        self.record(Call::ReplaceVmRules(vm.vm.clone()));
        if self.fails(Op::ReplaceVmRules) {
            return ready(Err(Self::nat_fail("replace VM rules")));
        }
        ready(self.world(|w| match &mut w.table {
            None => Err(NatError::Incomplete("banger".into())),
            Some(t) => {
                if vm.forwards.is_empty() {
                    t.remove(&vm.vm);
                } else {
                    t.insert(vm.vm.clone(), vm.clone());
                }
                Ok(())
            }
        }))
    }

    fn remove_vm_rules<'a>(&'a self, vms: &'a [VmId]) -> BoxFuture<'a, Result<usize, NatError>> {
        self.record(Call::RemoveVmRules(vms.to_vec()));
        if self.fails(Op::RemoveVmRules) {
            return ready(Err(Self::nat_fail("remove VM rules")));
        }
        ready(Ok(self.world(|w| match &mut w.table {
            None => 0,
            Some(t) => vms
                .iter()
                .filter_map(|v| t.remove(v))
                .map(|r| r.forwards.len() * 2)
                .sum(),
        })))
    }

    fn delete_table(&self) -> BoxFuture<'_, Result<(), NatError>> {
        self.record(Call::DeleteTable);
        self.world(|w| w.table = None);
        ready(Ok(()))
    }

    fn ensure_forward_accepts(&self) -> BoxFuture<'_, Result<Ensured, ForwardAcceptError>> {
        self.record(Call::EnsureForwardAccepts);
        let added = self.world(|w| !std::mem::replace(&mut w.forward_accepts, true));
        ready(Ok(Ensured::Present {
            chain: "FORWARD",
            added: if added { 3 } else { 0 },
        }))
    }

    fn remove_forward_accepts(&self) -> BoxFuture<'_, Result<usize, ForwardAcceptError>> {
        self.record(Call::RemoveForwardAccepts);
        let had = self.world(|w| std::mem::replace(&mut w.forward_accepts, false));
        ready(Ok(if had { 3 } else { 0 }))
    }

    fn sync_routes<'a>(
        &'a self,
        want: &'a [PeerRoute],
    ) -> BoxFuture<'a, Result<RoutePlan, RouteError>> {
        self.record(Call::SyncRoutes(want.to_vec()));
        ready(Ok(self.world(|w| {
            let p = plan(&w.routes, want);
            w.routes = want.to_vec();
            p
        })))
    }
}
