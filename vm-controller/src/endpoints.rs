//! The controller's bus endpoints: one `serve` line per operation of
//! [`banger_proto::op::vm`] — `<p>.vm.create` (queue group: NATS picks a host), `<p>.vm.list`
//! (every controller answers) and `<p>.host.<host>.vm.<op>`. Each handler returns its
//! operation's error ([`Handled`]); [`serve`] turns it into the reply with [`Coded::to_api`].

use std::future::Future;

use banger_bus::ServiceHost;
use banger_bus::error::BusError;
use banger_proto::op::{Lab, vm};

use crate::controller::Controller;
use crate::error::{Coded, Handled};
use crate::presence::Presence;

/// Serves operation `O` at `at` with `handler` (given `state`, usually the [`Controller`]),
/// whose error is `O`'s ([`Handled`]).
async fn serve<O, S, H, Fut>(
    host: &mut ServiceHost,
    op: O,
    at: &O::At,
    state: S,
    handler: H,
) -> Result<(), BusError>
where
    O: Handled,
    S: Clone + Send + Sync + 'static,
    H: Fn(S, O::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O::Reply, O::Error>> + Send + 'static,
{
    host.serve(op, at, state, move |c, r| {
        let reply = handler(c, r);
        async move { reply.await.map_err(|e| e.to_api()) }
    })
    .await
}

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
    serve(host, vm::List, &Lab, listing, |(c, p), r| async move {
        let mut reply = c.list(r).await?;
        p.fill(&mut reply);
        reply.vmm = Some(c.config().vmm.as_str().to_owned());
        Ok(reply)
    })
    .await?;
    // Placement: any controller of the lab (queue group) ...
    serve(host, vm::Place, &Lab, c.clone(), |c, r| async move {
        c.create(r).await.map(|reply| c.with_vmm(reply))
    })
    .await?;
    // ... or this one, when the request names the host.
    serve(host, vm::Create, &me, c.clone(), |c, r| async move {
        c.create(r).await.map(|reply| c.with_vmm(reply))
    })
    .await?;
    serve(host, vm::Start, &me, c.clone(), |c, r| async move {
        c.start(r).await
    })
    .await?;
    serve(host, vm::Stop, &me, c.clone(), |c, r| async move {
        c.stop(r).await
    })
    .await?;
    serve(host, vm::Restart, &me, c.clone(), |c, r| async move {
        c.restart(r).await
    })
    .await?;
    serve(host, vm::Kill, &me, c.clone(), |c, r| async move {
        c.kill(r).await
    })
    .await?;
    serve(host, vm::Delete, &me, c.clone(), |c, r| async move {
        c.delete(r).await
    })
    .await?;
    serve(host, vm::Set, &me, c.clone(), |c, r| async move {
        c.set(r).await
    })
    .await?;
    serve(host, vm::Get, &me, c.clone(), |c, r| async move {
        c.get(r).await
    })
    .await?;
    serve(host, vm::Health, &me, c.clone(), |c, r| async move {
        c.health(r).await
    })
    .await?;
    serve(host, vm::Logs, &me, c.clone(), |c, r| async move {
        c.logs(r).await
    })
    .await?;
    serve(host, vm::Stats, &me, c.clone(), |c, r| async move {
        c.stats(r).await
    })
    .await?;
    serve(host, vm::Exec, &me, c.clone(), |c, r| async move {
        c.exec(r).await
    })
    .await?;
    serve(
        host,
        vm::Touch,
        &me,
        c,
        |c, r| async move { c.touch(r).await },
    )
    .await?;
    host.check_serves(vm::ALL)
}
