//! One file per bus operation of `<p>.host.<host>.net.<op>`: each validates its request, acts,
//! and maps its error enum to the bus error object.

pub mod attach;
pub mod detach;
pub mod detach_batch;
pub mod list;
pub mod status;

use std::sync::Arc;

use banger_bus::{BusError, ServiceHost};
use banger_proto::op::net;

use crate::state::Netd;

/// Serves every operation of [`banger_proto::op::net`] on `host`.
pub async fn register(host: &mut ServiceHost, netd: &Arc<Netd>) -> Result<(), BusError> {
    let me = netd.host.clone();
    host.serve(net::Attach, &me, netd.clone(), attach::handle)
        .await?;
    host.serve(net::Detach, &me, netd.clone(), detach::handle)
        .await?;
    host.serve(net::List, &me, netd.clone(), list::handle)
        .await?;
    host.serve(net::Status, &me, netd.clone(), status::handle)
        .await?;
    host.check_serves(net::ALL)
}
