//! `net.list`: every lease, with whether its tap exists right now.

use std::collections::HashSet;
use std::sync::Arc;

use banger_bus::runtime::chain;
use banger_proto::ApiError;
use banger_proto::net::{NetListReply, NetListRequest};
use tracing::Instrument;

use crate::link::LinkError;
use crate::state::Netd;
use crate::store::StoreError;

/// Why listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Reading the leases.
    #[error("reading leases")]
    Store(#[from] StoreError),
    /// Listing interfaces.
    #[error("listing interfaces")]
    Link(#[from] LinkError),
}

/// The endpoint.
pub async fn handle(netd: Arc<Netd>, _req: NetListRequest) -> Result<NetListReply, ApiError> {
    let span = tracing::info_span!("net.list", host = %netd.host);
    list(&netd)
        .instrument(span)
        .await
        .map_err(|e| ApiError::internal(chain(&e)))
}

/// Every lease, ordered by address.
pub async fn list(netd: &Netd) -> Result<NetListReply, ListError> {
    let leases = netd.store.all().await?;
    let names: HashSet<String> = netd
        .kernel
        .list_links()
        .await?
        .into_iter()
        .map(|l| l.name)
        .collect();
    Ok(NetListReply {
        leases: leases
            .iter()
            .map(|l| netd.to_wire(l, names.contains(&l.tap)))
            .collect(),
    })
}
