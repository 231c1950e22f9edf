//! The controller's bus endpoints: `<p>.vm.create` (queue group `vm-controller`: NATS picks a
//! host), `<p>.vm.list` (every controller answers) and `<p>.host.<host>.vm.<op>` for every
//! [`VmOp`].

use banger_bus::ServiceHost;
use banger_bus::error::BusError;
use banger_proto::subject::VmOp;
use banger_proto::vm::{
    CreateVmRequest, ListVmsRequest, LogsRequest, SetVmRequest, VmExecRequest, VmRefRequest,
};

use crate::controller::Controller;

/// Registers a handler that calls `Controller::$method` with the decoded request.
macro_rules! op_endpoint {
    ($host:expr, $ctl:expr, $name:expr, $subject:expr, $req:ty, $method:ident) => {{
        let ctl = $ctl.clone();
        $host
            .endpoint($name, $subject, move |req: $req| {
                let ctl = ctl.clone();
                async move { ctl.$method(req).await }
            })
            .await?;
    }};
}

/// Adds every endpoint of `ctl` to `host`.
pub async fn register(host: &mut ServiceHost, ctl: &Controller) -> Result<(), BusError> {
    let subjects = host.bus().subjects().clone();
    let me = ctl.host().clone();
    let list_ctl = ctl.clone();
    host.broadcast_endpoint("list", subjects.vm_list(), move |_: ListVmsRequest| {
        let ctl = list_ctl.clone();
        async move { ctl.list().await }
    })
    .await?;
    // Placement: any controller of the lab (queue group) ...
    op_endpoint!(
        host,
        ctl,
        "place",
        subjects.vm_create(),
        CreateVmRequest,
        create
    );
    for op in VmOp::ALL.iter().copied() {
        let subject = subjects.host_vm(&me, op);
        match op {
            // ... or this one, when the request names the host.
            VmOp::Create => op_endpoint!(host, ctl, op.as_str(), subject, CreateVmRequest, create),
            VmOp::Start => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, start),
            VmOp::Stop => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, stop),
            VmOp::Restart => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, restart),
            VmOp::Kill => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, kill),
            VmOp::Delete => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, delete),
            VmOp::Set => op_endpoint!(host, ctl, op.as_str(), subject, SetVmRequest, set),
            VmOp::Get => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, get),
            VmOp::Health => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, health),
            VmOp::Logs => op_endpoint!(host, ctl, op.as_str(), subject, LogsRequest, logs),
            VmOp::Stats => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, stats),
            VmOp::Exec => op_endpoint!(host, ctl, op.as_str(), subject, VmExecRequest, exec),
            VmOp::Touch => op_endpoint!(host, ctl, op.as_str(), subject, VmRefRequest, touch),
        }
    }
    Ok(())
}
