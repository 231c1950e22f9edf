//! `net.status`: the bridge, the subnet, whether banger's table is complete, and counts.

use std::sync::Arc;

use banger_bus::runtime::chain;
use banger_proto::ApiError;
use banger_proto::net::{NetStatus, NetStatusRequest};
use tracing::Instrument;

use crate::lease::TAP_PREFIX;
use crate::link::LinkError;
use crate::nat::NatError;
use crate::state::Netd;
use crate::store::StoreError;

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Reading the leases.
    #[error("reading leases")]
    Store(#[from] StoreError),
    /// Listing interfaces.
    #[error("listing interfaces")]
    Link(#[from] LinkError),
    /// Reading the table.
    #[error("reading the nftables table")]
    Nat(#[from] NatError),
}

/// The endpoint.
pub async fn handle(netd: Arc<Netd>, _req: NetStatusRequest) -> Result<NetStatus, ApiError> {
    let span = tracing::info_span!("net.status", host = %netd.host);
    status(&netd)
        .instrument(span)
        .await
        .map_err(|e| ApiError::internal(chain(&e)))
}

/// The status (`nat_table_present` means the table and all its base rules are there).
pub async fn status(netd: &Netd) -> Result<NetStatus, StatusError> {
    let links = netd.kernel.list_links().await?;
    let bridge_up = links.iter().any(|l| l.name == netd.cfg.bridge && l.up);
    let taps = links
        .iter()
        .filter(|l| l.name.starts_with(TAP_PREFIX))
        .count();
    let leases = netd.store.all().await?.len();
    let table = netd.kernel.rules_state().await?;
    Ok(NetStatus {
        bridge: netd.cfg.bridge.clone(),
        bridge_up,
        subnet: netd.cfg.subnet.to_string(),
        gateway: netd.cfg.gateway.to_string(),
        nat_table_present: table.base_complete,
        leases: u32::try_from(leases).unwrap_or(u32::MAX),
        taps: u32::try_from(taps).unwrap_or(u32::MAX),
    })
}
