//! netd: owns the host bridge, one tap per VM, address leases and NAT rules.
//!
//! Answers `<p>.host.<host>.net.{attach,detach,list,status}` ([`ops`]), reacts to this host's
//! `stopped` and `deleted` events ([`events`]) and reconciles at start-up and periodically
//! ([`reconcile`]). Kernel state goes through [`link`] (rtnetlink), [`tap`] (tun ioctls) and
//! [`nat`] (one nftables table); leases live in SQLite ([`store`]). What is left behind on exit
//! is decided in [`exit`].

pub mod config;
pub mod events;
pub mod exit;
pub mod lease;
pub mod link;
pub mod nat;
pub mod ops;
pub mod reconcile;
pub mod state;
pub mod store;
pub mod tap;

use std::sync::Arc;

use banger_bus::config::CommonArgs;
use banger_bus::runtime::{Context, chain};
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::service;

use crate::config::{ConfigError, NetConfig, NetdFile};
use crate::state::{Netd, StartError};

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

    /// Host bridge name [default: [netd] bridge, else banger0]
    #[arg(long, env = "BANGER_NETD_BRIDGE")]
    pub bridge: Option<String>,

    /// VM subnet in CIDR form [default: [netd] subnet, else 172.16.0.0/24]
    #[arg(long, env = "BANGER_NETD_SUBNET")]
    pub subnet: Option<String>,

    /// The bridge's address, the VMs' gateway [default: [netd] gateway, else the subnet's
    /// first host]
    #[arg(long, env = "BANGER_NETD_GATEWAY")]
    pub gateway: Option<String>,
}

/// Why netd stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// Start-up failed.
    #[error("starting netd")]
    Start(#[from] StartError),
}

/// Resolves the `[netd]` table and the flags into a validated configuration.
pub fn resolve_config(ctx: &Context, args: &Args) -> Result<NetConfig, RunError> {
    let mut file: NetdFile = ctx.config.section(service::NETD)?;
    if let Some(b) = &args.bridge {
        file.bridge.clone_from(b);
    }
    if let Some(s) = &args.subnet {
        file.subnet.clone_from(s);
        // A gateway from the file belongs to the file's subnet: a new subnet brings its own
        // default unless a gateway flag is given as well.
        file.gateway = None;
    }
    if let Some(g) = &args.gateway {
        file.gateway = Some(g.clone());
    }
    Ok(NetConfig::from_file(file)?)
}

/// Runs netd until `shutdown` is cancelled, then applies the exit policy ([`exit`]): with no VM
/// holding its network the table and the bridge are removed; otherwise taps, bridge and rules
/// outlive the process, so VMs keep their network while netd restarts.
pub async fn run(ctx: Context, args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let cfg = resolve_config(&ctx, &args)?;
    let subnet = cfg.subnet.to_string();
    let netd = Arc::new(
        Netd::start(
            ctx.bus.clone(),
            ctx.config.host.clone(),
            cfg,
            ctx.config.service_state_dir(service::NETD),
        )
        .await?,
    );
    // Subscribe before reconciling, so an event during the pass is not missed.
    let subs = events::subscribe(&netd).await?;
    if let Err(e) = reconcile::reconcile(&netd).await {
        tracing::warn!(error = %chain(&e), "start-up reconciliation failed; will retry");
    }

    let spec = ServiceSpec::new(
        service::NETD,
        "bridge, taps, leases and NAT",
        &ctx.config.host,
    )
    .with_meta(service::META_SUBNET, subnet);
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    ops::register(&mut host, &netd).await?;
    host.spawn(events::watch(netd.clone(), subs, shutdown.clone()));
    host.spawn(reconcile::periodic(netd.clone(), shutdown.clone()));
    host.run(shutdown).await;
    if let Err(e) = exit::on_exit(&netd).await {
        tracing::warn!(error = %chain(&e), "cleaning up on exit failed");
    }
    Ok(())
}
