//! One file per bus operation of `<p>.host.<host>.net.<op>`: each validates its request, acts,
//! and maps its error enum to the bus error object.

pub mod attach;
pub mod detach;
pub mod list;
pub mod status;

use std::sync::Arc;

use banger_bus::{BusError, ServiceHost};
use banger_proto::subject::NetOp;

use crate::state::Netd;

/// Registers every operation's endpoint on `host`.
pub async fn register(host: &mut ServiceHost, netd: &Arc<Netd>) -> Result<(), BusError> {
    let subject = |op| host.bus().subjects().host_net(&netd.host, op);
    let (attach, detach, list, status) = (
        subject(NetOp::Attach),
        subject(NetOp::Detach),
        subject(NetOp::List),
        subject(NetOp::Status),
    );
    let n = netd.clone();
    host.endpoint(NetOp::Attach.as_str(), attach, move |req| {
        attach::handle(n.clone(), req)
    })
    .await?;
    let n = netd.clone();
    host.endpoint(NetOp::Detach.as_str(), detach, move |req| {
        detach::handle(n.clone(), req)
    })
    .await?;
    let n = netd.clone();
    host.endpoint(NetOp::List.as_str(), list, move |req| {
        list::handle(n.clone(), req)
    })
    .await?;
    let n = netd.clone();
    host.endpoint(NetOp::Status.as_str(), status, move |req| {
        status::handle(n.clone(), req)
    })
    .await?;
    Ok(())
}
