//! netd: owns the host bridge, one tap per VM, address leases and NAT rules.
//!
//! Answers `<p>.host.<host>.net.<op>` and reacts to lifecycle events of its host.

use banger_bus::config::CommonArgs;
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::net::{NetStatus, NetStatusRequest};
use banger_proto::service;
use banger_proto::subject::NetOp;

/// Command-line flags of `banger-netd`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "banger-netd",
    version,
    about = "banger's per-host network daemon: bridge, taps, leases and NAT",
    long_about = "banger's per-host network daemon. It owns the host bridge, one tap per VM, \
                  the VMs' address leases and banger's nftables table, and follows VM lifecycle \
                  events. Run one per host, as root."
)]
pub struct Args {
    /// Shared flags: NATS connection, host id, directories.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Why netd stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
}

/// Runs netd until `shutdown` is cancelled.
pub async fn run(ctx: Context, _args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let spec = ServiceSpec::new(
        service::NETD,
        "bridge, taps, leases and NAT",
        &ctx.config.host,
    );
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    let subject = ctx.bus.subjects().host_net(&ctx.config.host, NetOp::Status);
    host.endpoint("status", subject, |_: NetStatusRequest| async {
        // Nothing is managed yet: report exactly that.
        Ok(NetStatus {
            bridge: String::new(),
            bridge_up: false,
            subnet: String::new(),
            gateway: String::new(),
            nat_table_present: false,
            leases: 0,
            taps: 0,
        })
    })
    .await?;
    host.run(shutdown).await;
    Ok(())
}
