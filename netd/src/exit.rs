//! What netd leaves behind when it stops (SIGTERM, `banger down`).
//!
//! The policy: **idle, netd cleans up; busy, it leaves everything alone.**
//!
//! - When no VM holds its network (no active lease, no banger tap, nothing else enslaved to the
//!   bridge), netd deletes its nftables table and the bridge, so stopping the stack leaves
//!   nothing of banger on the host (nor the iptables accept rules of
//!   [`crate::forward_accept`]). Leases of stopped VMs stay in SQLite: they are data, not
//!   kernel state, and give a VM its old address when it starts again. IPv4 forwarding is left
//!   as it is (it is a host-wide switch that something else may rely on).
//! - When any VM still holds its network, the table, the bridge and the taps stay, so running
//!   VMs keep their connectivity (and their NAT) across a netd restart or upgrade; the next netd
//!   reconciles from there.
//!
//! The decision and the removal happen under the reconciliation gate, after the endpoints and
//! event reactions have drained, so no attach can slip in between.

use crate::lease::TAP_PREFIX;
use crate::link::LinkError;
use crate::nat::NatError;
use crate::state::Netd;
use crate::store::StoreError;

/// What netd did on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    /// Nothing held the network: the table and the bridge were removed.
    Removed,
    /// Something still holds the network: everything was kept.
    Kept {
        /// Leases whose VM holds its tap.
        active_leases: usize,
        /// Interfaces on the bridge or with banger's tap prefix.
        interfaces: Vec<String>,
    },
}

/// Why the exit cleanup failed.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// Reading leases.
    #[error("reading leases")]
    Store(#[from] StoreError),
    /// Netlink.
    #[error("removing the bridge")]
    Link(#[from] LinkError),
    /// nftables.
    #[error("removing the nftables table")]
    Nat(#[from] NatError),
    /// iptables.
    #[error("removing the iptables accept rules")]
    ForwardAccept(#[from] crate::forward_accept::ForwardAcceptError),
}

/// Applies the exit policy (see the module docs).
pub async fn on_exit(netd: &Netd) -> Result<ExitOutcome, ExitError> {
    let _gate = netd.gate.write().await;
    let active_leases = netd.store.all().await?.iter().filter(|l| l.active).count();
    let links = netd.kernel.list_links().await?;
    let bridge = links.iter().find(|l| l.name == netd.cfg.bridge);
    let interfaces: Vec<String> = links
        .iter()
        .filter(|l| {
            l.name.starts_with(TAP_PREFIX) || bridge.is_some_and(|b| l.master == Some(b.index))
        })
        .map(|l| l.name.clone())
        .collect();
    if active_leases > 0 || !interfaces.is_empty() {
        tracing::info!(
            active_leases,
            interfaces = ?interfaces,
            "VMs still hold the network: keeping the bridge and the nftables table"
        );
        return Ok(ExitOutcome::Kept {
            active_leases,
            interfaces,
        });
    }
    netd.kernel.delete_table().await?;
    netd.kernel.remove_forward_accepts().await?;
    if let Some(b) = bridge {
        netd.kernel.delete_link(b.index).await?;
    }
    tracing::info!(
        bridge = %netd.cfg.bridge,
        table = %netd.cfg.table,
        "no VM holds the network: removed the bridge and the nftables table"
    );
    Ok(ExitOutcome::Removed)
}
