//! The running netd: configuration, lease store and the kernel ([`HostNet`]), plus the locks
//! that keep operations on one VM in order.
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
use crate::kernel::{BridgeSpec, HostNet, IP_FORWARD, Linux};
use crate::lease;
use crate::link::{LinkError, Links};
use crate::nat::{Nat, NatError, VmRules};
use crate::ops::detach_batch::DetachQueue;
use crate::peers::PeerTable;
use crate::route::{RouteError, Routes};
use crate::store::{LeaseRow, LeaseStore, StoreError};

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
    /// The kernel: devices, the nftables table, iptables accepts, routes.
    pub kernel: Arc<dyn HostNet>,
    /// Shared by operations, exclusive for reconciliation.
    pub gate: RwLock<()>,
    /// Per-VM locks.
    pub locks: VmLocks,
    /// The other hosts' netds, as discovered (lab mode).
    pub peers: PeerTable,
    /// `net.detach` requests waiting to be torn down together.
    pub detaches: DetachQueue,
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
        let lab_range = cfg.lab.as_ref().map(|l| l.range);
        let kernel = Linux {
            links: Links::connect()?,
            nat: Nat::new(&cfg.table, &cfg.bridge, cfg.subnet, &cfg.uplinks)
                .with_lab_range(lab_range),
            routes: Routes::connect(cfg.peers.route_protocol)?,
            forward: ForwardAccept::new(&cfg.bridge, &cfg.table, lab_range),
        };
        Self::with_kernel(bus, host, cfg, store, Arc::new(kernel)).await
    }

    /// Starts on `kernel` with an opened `store`: ensures the bridge, enables forwarding and
    /// installs the table with the rules of the active leases.
    pub async fn with_kernel(
        bus: Bus,
        host: HostId,
        cfg: NetConfig,
        store: LeaseStore,
        kernel: Arc<dyn HostNet>,
    ) -> Result<Self, StartError> {
        let netd = Self {
            cfg,
            host,
            bus,
            store,
            kernel,
            gate: RwLock::new(()),
            locks: VmLocks::default(),
            peers: PeerTable::default(),
            detaches: DetachQueue::default(),
        };
        netd.ensure_bridge().await?;
        netd.kernel
            .enable_forwarding()
            .await
            .map_err(StartError::Forwarding)?;
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
        self.kernel
            .ensure_bridge(BridgeSpec {
                name: &self.cfg.bridge,
                gateway: self.cfg.gateway,
                prefix_len: self.cfg.subnet.prefix_len(),
                mtu: self.cfg.mtu,
            })
            .await
    }

    /// Reinstalls the whole table from the active leases, atomically.
    pub async fn restore_rules(&self) -> Result<(), RestoreError> {
        let leases = self.store.all().await?;
        self.kernel.install_rules(&desired_rules(&leases)).await?;
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
