//! The running netd: configuration, lease store, netlink connection and NAT table, plus the
//! locks that keep operations on one VM in order.
//!
//! Locking: every operation on a VM holds that VM's lock, so attach, detach and event reactions
//! of one VM never interleave while different VMs proceed in parallel. Reconciliation takes the
//! `gate` exclusively (operations hold it shared), so it sees and changes a consistent picture.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_bus::Bus;
use banger_proto::net::Lease;
use banger_proto::{HostId, VmId};
use tokio::sync::{OwnedMutexGuard, RwLock};

use crate::config::NetConfig;
use crate::forward_accept::ForwardAccept;
use crate::lease;
use crate::link::{LinkError, Links};
use crate::nat::{Nat, NatError, VmRules};
use crate::peers::PeerTable;
use crate::route::{RouteError, Routes};
use crate::store::{LeaseRow, LeaseStore, StoreError};

/// Where the kernel's IPv4 forwarding switch lives (per network namespace).
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Why netd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The lease store.
    #[error("opening the lease store")]
    Store(#[from] StoreError),
    /// The bridge.
    #[error("setting up the bridge")]
    Link(#[from] LinkError),
    /// IPv4 forwarding.
    #[error("enabling IPv4 forwarding in {IP_FORWARD}")]
    Forwarding(#[source] std::io::Error),
    /// The NAT table.
    #[error("installing the nftables table")]
    Nat(#[from] NatError),
    /// The routing netlink socket.
    #[error("opening the route socket")]
    Routes(#[from] RouteError),
}

/// Why the rules could not be restored from the lease store.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the leases.
    #[error("reading leases")]
    Store(#[from] StoreError),
    /// Installing the table.
    #[error("reinstalling the nftables table")]
    Nat(#[from] NatError),
}

/// One lock per VM.
#[derive(Default)]
pub struct VmLocks(Mutex<HashMap<VmId, Arc<tokio::sync::Mutex<()>>>>);

impl VmLocks {
    fn entry(&self, vm: &VmId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Drop locks nobody holds or waits for, so the map does not grow with every VM ever seen.
        if map.len() > 1024 {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        map.entry(vm.clone()).or_default().clone()
    }

    /// Waits for `vm`'s lock.
    pub async fn lock(&self, vm: &VmId) -> OwnedMutexGuard<()> {
        self.entry(vm).lock_owned().await
    }

    /// Waits for the locks of `vms` (deduplicated, taken in id order so two batches never
    /// deadlock).
    pub async fn lock_many(&self, vms: &[VmId]) -> Vec<OwnedMutexGuard<()>> {
        let mut ids: Vec<&VmId> = vms.iter().collect();
        ids.sort();
        ids.dedup();
        let mut guards = Vec::with_capacity(ids.len());
        for id in ids {
            guards.push(self.lock(id).await);
        }
        guards
    }
}

/// The running service's state, shared by every operation.
pub struct Netd {
    /// Validated configuration.
    pub cfg: NetConfig,
    /// This host.
    pub host: HostId,
    /// The bus (for `vm.list` during reconciliation).
    pub bus: Bus,
    /// Leases.
    pub store: LeaseStore,
    /// Netlink.
    pub links: Links,
    /// The nftables table.
    pub nat: Nat,
    /// Shared by operations, exclusive for reconciliation.
    pub gate: RwLock<()>,
    /// Per-VM locks.
    pub locks: VmLocks,
    /// The other hosts' netds, as discovered (lab mode).
    pub peers: PeerTable,
    /// Routes to the other hosts' VM subnets.
    pub routes: Routes,
    /// Accepts for the bridge in iptables' FORWARD path, when its policy drops (Docker).
    pub forward: ForwardAccept,
}

impl Netd {
    /// Opens the store, ensures the bridge, enables forwarding and installs the table with the
    /// rules of the active leases.
    pub async fn start(
        bus: Bus,
        host: HostId,
        cfg: NetConfig,
        state_dir: PathBuf,
    ) -> Result<Self, StartError> {
        let store = tokio::task::spawn_blocking(move || LeaseStore::open(&state_dir))
            .await
            .map_err(StoreError::Join)??;
        let links = Links::connect()?;
        let nat = Nat::new(&cfg.table, &cfg.bridge, cfg.subnet, &cfg.uplinks)
            .with_lab_range(cfg.lab.as_ref().map(|l| l.range));
        let routes = Routes::connect(cfg.peers.route_protocol)?;
        let forward =
            ForwardAccept::new(&cfg.bridge, &cfg.table, cfg.lab.as_ref().map(|l| l.range));
        let netd = Self {
            cfg,
            host,
            bus,
            store,
            links,
            nat,
            gate: RwLock::new(()),
            locks: VmLocks::default(),
            peers: PeerTable::default(),
            routes,
            forward,
        };
        netd.ensure_bridge().await?;
        enable_forwarding().await.map_err(StartError::Forwarding)?;
        match netd.restore_rules().await {
            Ok(()) => {}
            Err(RestoreError::Store(e)) => return Err(e.into()),
            Err(RestoreError::Nat(e)) => return Err(e.into()),
        }
        tracing::info!(
            bridge = %netd.cfg.bridge,
            subnet = %netd.cfg.subnet,
            table = %netd.cfg.table,
            "network ready"
        );
        Ok(netd)
    }

    /// Creates the bridge if it is missing; returns its index.
    pub async fn ensure_bridge(&self) -> Result<u32, LinkError> {
        self.links
            .ensure_bridge(
                &self.cfg.bridge,
                self.cfg.gateway,
                self.cfg.subnet.prefix_len(),
                self.cfg.mtu,
            )
            .await
    }

    /// Reinstalls the whole table from the active leases, atomically.
    pub async fn restore_rules(&self) -> Result<(), RestoreError> {
        let leases = self.store.all().await?;
        self.nat.install(&desired_rules(&leases)).await?;
        Ok(())
    }

    /// The wire form of a stored lease.
    pub fn to_wire(&self, l: &LeaseRow, tap_present: bool) -> Lease {
        Lease {
            vm_id: l.vm_id.clone(),
            vm_name: l.vm_name.clone(),
            tap: l.tap.clone(),
            mac: l.mac.clone(),
            ip: l.ip.to_string(),
            prefix_len: self.cfg.subnet.prefix_len(),
            gateway: self.cfg.gateway.to_string(),
            kernel_ip_arg: lease::kernel_ip_arg(
                l.ip,
                self.cfg.gateway,
                self.cfg.subnet,
                l.vm_name.as_str(),
                &self.cfg.guest_dns,
            ),
            port_forwards: l.port_forwards.clone(),
            tap_present,
        }
    }
}

/// The per-VM rules the table should hold: those of active leases with forwards.
pub fn desired_rules(leases: &[LeaseRow]) -> Vec<VmRules> {
    leases
        .iter()
        .filter(|l| l.active && !l.port_forwards.is_empty())
        .map(|l| VmRules {
            vm: l.vm_id.clone(),
            ip: l.ip,
            forwards: l.port_forwards.clone(),
        })
        .collect()
}

/// Turns on IPv4 forwarding (a no-op write when it is on).
pub async fn enable_forwarding() -> Result<(), std::io::Error> {
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
