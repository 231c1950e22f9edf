//! dnsd: serves `<name>.vm` for every running VM.
//!
//! Answers `<p>.dns.<op>` and follows lifecycle events of every host.

use banger_bus::config::CommonArgs;
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::dns::{DnsStatus, DnsStatusRequest};
use banger_proto::service;
use banger_proto::subject::DnsOp;

/// Command-line flags of `banger-dnsd`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "banger-dnsd",
    version,
    about = "banger's DNS server: <name>.vm for every running VM",
    long_about = "banger's authoritative DNS server for the `vm.` zone. It answers <name>.vm \
                  (and <name>.<host>.vm) for every running VM, following lifecycle events and \
                  rebuilding from the controllers' VM lists. One or more per lab."
)]
pub struct Args {
    /// Shared flags: NATS connection, host id, directories.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Why dnsd stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
}

/// Runs dnsd until `shutdown` is cancelled.
pub async fn run(ctx: Context, _args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let spec = ServiceSpec::new(service::DNSD, "<name>.vm records", &ctx.config.host);
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    host.endpoint(
        "status",
        ctx.bus.subjects().dns(DnsOp::Status),
        |_: DnsStatusRequest| async {
            Ok(DnsStatus {
                listeners: Vec::new(),
                zone: "vm.".into(),
                records: 0,
                last_rebuild_ms: None,
            })
        },
    )
    .await?;
    host.run(shutdown).await;
    Ok(())
}
