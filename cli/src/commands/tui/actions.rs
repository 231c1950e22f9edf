//! Carrying out the model's [`Effect`]s on the bus, through the same functions the `banger vm`
//! commands use (`vm.list` snapshot, batch `apply`, `create::send`, `exec::send`, `logs::read`),
//! each as a future that ends in the [`Msg`] reporting how it went. The main loop owns the
//! futures, so quitting cancels whatever is still in flight.

use std::collections::BTreeMap;
use std::time::Duration;

use banger_proto::agent::ExecRequest;
use banger_proto::op::vm;
use banger_proto::subject::VmOp;
use banger_proto::vm::{LogSource, LogsRequest, VmInfo, VmRefRequest};
use futures::FutureExt as _;
use futures::future::LocalBoxFuture;

use super::state::{Effect, Msg};
use crate::App;
use crate::commands::vm::batch::{self, Action as BatchAction};
use crate::commands::vm::resolve::Target;
use crate::commands::vm::{create, exec, logs, snapshot};

/// One health question: the agent answers in milliseconds when it is up.
const HEALTH_ATTEMPT: Duration = Duration::from_secs(5);
/// How long a VM that just started gets for its agent to answer `ok`.
const HEALTH_AFTER_START: Duration = Duration::from_secs(60);
/// Between two health questions to a VM that just started.
const HEALTH_RETRY: Duration = Duration::from_secs(1);
/// Before asking for the list again after a failed attempt.
const RESYNC_RETRY: Duration = Duration::from_secs(2);
/// The most one log read asks for.
const LOG_CHUNK: u64 = 64 * 1024;

/// A future the main loop polls until it yields its message.
pub(crate) type Pending<'a> = LocalBoxFuture<'a, Msg>;

/// The future that carries out `effect` (all but [`Effect::Ssh`], which needs the terminal and
/// is run by the main loop).
pub(crate) fn start(app: &App, effect: Effect) -> Option<Pending<'_>> {
    Some(match effect {
        Effect::Resync => list(app, Duration::ZERO).boxed_local(),
        Effect::RetryResync => list(app, RESYNC_RETRY).boxed_local(),
        Effect::ProbeHealth { vm, until_healthy } => health(app, vm, until_healthy).boxed_local(),
        Effect::Lifecycle(vm, op) => lifecycle(app, vm, op).boxed_local(),
        Effect::Create(req) => async move {
            match create::send(app, &req).await {
                Ok(reply) => {
                    let mut text = create::describe(&reply.vm);
                    if let Some(note) = reply.note {
                        text.push_str(&format!("; {note}"));
                    }
                    Msg::OpDone {
                        text,
                        failed: false,
                        vm: Some(reply.vm),
                    }
                }
                Err(e) => Msg::OpDone {
                    text: format!("error: {}", banger_bus::runtime::chain(e.as_ref())),
                    failed: true,
                    vm: None,
                },
            }
        }
        .boxed_local(),
        Effect::Exec(vm, argv) => async move {
            let req = ExecRequest {
                argv,
                env: BTreeMap::new(),
                cwd: None,
                stdin: None,
                timeout_ms: None,
            };
            Msg::ExecDone(
                exec::send(app, &vm, req, None)
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
        .boxed_local(),
        Effect::Ssh(_) => return None,
    })
}

/// Asks every host for its VMs (after `delay`): the seed of the table, and its resync after a
/// reconnect or a failed list.
async fn list(app: &App, delay: Duration) -> Msg {
    tokio::time::sleep(delay).await;
    let requested_at_ms = banger_bus::now_ms();
    match snapshot::fetch(app, &[]).await {
        Ok(snap) => Msg::Snapshot {
            vms: snap.vms,
            unreachable: snap.unreachable,
            requested_at_ms,
        },
        Err(e) => Msg::SnapshotFailed(banger_bus::runtime::chain(e.as_ref())),
    }
}

async fn health(app: &App, vm: VmInfo, until_healthy: bool) -> Msg {
    let req = VmRefRequest { id: vm.id.clone() };
    let end = tokio::time::Instant::now() + HEALTH_AFTER_START;
    loop {
        let result = app
            .bus
            .call::<vm::Health>(&vm.host, &req, HEALTH_ATTEMPT)
            .await
            .map_err(|e| e.to_string());
        let healthy = matches!(&result, Ok(h) if h.status == "ok");
        if healthy || !until_healthy || tokio::time::Instant::now() >= end {
            return Msg::Health { id: vm.id, result };
        }
        tokio::time::sleep(HEALTH_RETRY).await;
    }
}

async fn lifecycle(app: &App, vm: VmInfo, op: VmOp) -> Msg {
    let name = vm.name.to_string();
    let action = BatchAction::Lifecycle(op);
    let target = Target {
        reference: name.clone(),
        vm: Ok(vm),
    };
    let o = batch::apply(app, target, action).await;
    let text = match (&o.error, &o.note) {
        (Some(e), _) => format!("{name}: {op} failed: {} ({})", e.message, e.code),
        (None, Some(note)) => format!("{name}: {}; {note}", action.done()),
        (None, None) => format!("{name}: {}", action.done()),
    };
    Msg::OpDone {
        text,
        failed: !o.ok,
        // A deleted VM's last record would bring its row back.
        vm: o.vm.filter(|_| op != VmOp::Delete),
    }
}

/// Reads the next window of `vm`'s serial console, from `offset` (`None`: its tail).
pub(crate) fn read_log(app: &App, vm: VmInfo, offset: Option<u64>) -> Pending<'_> {
    async move {
        let req = LogsRequest {
            id: vm.id.clone(),
            source: LogSource::Serial,
            offset,
            max_bytes: Some(LOG_CHUNK),
        };
        Msg::Logs {
            id: vm.id.clone(),
            from: offset,
            result: logs::read(app, &vm, &req)
                .await
                .map(|r| (r.data, r.next_offset))
                .map_err(|e| e.to_string()),
        }
    }
    .boxed_local()
}
