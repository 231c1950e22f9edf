//! The controller's bus endpoints: one `serve` line per operation of
//! [`banger_proto::op::vm`] — `<p>.vm.create` (queue group: NATS picks a host), `<p>.vm.list`
//! (every controller answers) and `<p>.host.<host>.vm.<op>`.

use banger_bus::ServiceHost;
use banger_bus::error::BusError;
use banger_proto::op::{Lab, vm};

use crate::controller::Controller;
use crate::presence::Presence;

/// Adds every endpoint of `ctl` to `host`.
/// `vm.list` answers carry what `presence` knows of the other controllers.
pub async fn register(
    host: &mut ServiceHost,
    ctl: &Controller,
    presence: &Presence,
) -> Result<(), BusError> {
    let me = ctl.host().clone();
    let c = ctl.clone();
    let listing = (c.clone(), presence.clone());
    host.serve(vm::List, &Lab, listing, |(c, p), r| async move {
        let mut reply = c.list(r).await?;
        p.fill(&mut reply);
        reply.vmm = Some(c.config().vmm.as_str().to_owned());
        Ok(reply)
    })
    .await?;
    // Placement: any controller of the lab (queue group) ...
    host.serve(vm::Place, &Lab, c.clone(), |c, r| async move {
        c.create(r).await
    })
    .await?;
    // ... or this one, when the request names the host.
    host.serve(vm::Create, &me, c.clone(), |c, r| async move {
        c.create(r).await
    })
    .await?;
    host.serve(
        vm::Start,
        &me,
        c.clone(),
        |c, r| async move { c.start(r).await },
    )
    .await?;
    host.serve(
        vm::Stop,
        &me,
        c.clone(),
        |c, r| async move { c.stop(r).await },
    )
    .await?;
    host.serve(vm::Restart, &me, c.clone(), |c, r| async move {
        c.restart(r).await
    })
    .await?;
    host.serve(
        vm::Kill,
        &me,
        c.clone(),
        |c, r| async move { c.kill(r).await },
    )
    .await?;
    host.serve(vm::Delete, &me, c.clone(), |c, r| async move {
        c.delete(r).await
    })
    .await?;
    host.serve(
        vm::Set,
        &me,
        c.clone(),
        |c, r| async move { c.set(r).await },
    )
    .await?;
    host.serve(
        vm::Get,
        &me,
        c.clone(),
        |c, r| async move { c.get(r).await },
    )
    .await?;
    host.serve(vm::Health, &me, c.clone(), |c, r| async move {
        c.health(r).await
    })
    .await?;
    host.serve(
        vm::Logs,
        &me,
        c.clone(),
        |c, r| async move { c.logs(r).await },
    )
    .await?;
    host.serve(
        vm::Stats,
        &me,
        c.clone(),
        |c, r| async move { c.stats(r).await },
    )
    .await?;
    host.serve(
        vm::Exec,
        &me,
        c.clone(),
        |c, r| async move { c.exec(r).await },
    )
    .await?;
    host.serve(vm::Touch, &me, c, |c, r| async move { c.touch(r).await })
        .await?;
    host.check_serves(vm::ALL)
}
