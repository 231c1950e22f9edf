//! netd: owns the host bridge, one tap per VM, address leases and NAT rules.
//!
//! Answers `<p>.host.<host>.net.{attach,detach,list,status}` ([`ops`]), reacts to this host's
//! `stopped` and `deleted` events ([`events`]) and reconciles at start-up and periodically
//! ([`reconcile`]). Every kernel call goes through the trait [`kernel::HostNet`], whose real
//! implementation delegates to [`link`] (rtnetlink), [`tap`] (tun ioctls), [`nat`] (one
//! nftables table), [`forward_accept`] (iptables) and [`route`]; a recording double unit-tests
//! the decisions without root. Leases live in SQLite ([`store`]). What is left behind on exit
//! is decided in [`exit`].
//!
//! Lab mode (several hosts on one NATS cluster): the host's VM subnet is claimed in a JetStream
//! KV bucket ([`subnets`]), the other hosts' subnets and addresses are learned from their
//! service-API metadata ([`peers`]), and routes to them are kept with rtnetlink ([`route`]).

pub mod config;
pub mod events;
pub mod exit;
pub mod forward_accept;
pub mod kernel;
pub mod lease;
pub mod link;
mod link_gone;
pub mod nat;
pub mod ops;
pub mod peers;
pub mod reconcile;
pub mod route;
pub mod state;
pub mod store;
pub mod subnets;
pub mod tap;

use std::sync::Arc;

use banger_bus::config::CommonArgs;
use banger_bus::runtime::{Context, chain};
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::service;

use std::net::{IpAddr, Ipv4Addr};

use crate::config::{ConfigError, LabConfig, NetConfig, NetdFile};
use crate::state::{Netd, StartError};
use crate::subnets::ClaimError;

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

    /// VM subnet in CIDR form [default: [netd] subnet, else one allocated from [netd]
    /// lab_range, else 172.16.0.0/24]
    #[arg(long, env = "BANGER_NETD_SUBNET")]
    pub subnet: Option<String>,

    /// This host's address on the lab network, where the other hosts route this host's VM
    /// subnet [default: [netd] host_address, else the source address the kernel uses towards
    /// the first non-loopback NATS URL]
    #[arg(long, env = "BANGER_NETD_HOST_ADDRESS")]
    pub host_address: Option<String>,

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
    /// No VM subnet could be claimed in the lab.
    #[error("claiming this host's VM subnet")]
    Claim(#[from] ClaimError),
}

/// The `[netd]` table with the flags applied over it.
pub fn file_with_flags(ctx: &Context, args: &Args) -> Result<NetdFile, RunError> {
    let mut file: NetdFile = ctx.config.section(service::NETD)?;
    if let Some(s) = &args.subnet {
        file.subnet = Some(s.clone());
        // A gateway from the file belongs to the file's subnet: a new subnet brings its own
        // default unless a gateway flag is given as well.
        file.gateway = None;
    }
    if let Some(b) = &args.bridge {
        file.bridge.clone_from(b);
    }
    if let Some(g) = &args.gateway {
        file.gateway = Some(g.clone());
    }
    if let Some(a) = &args.host_address {
        file.host_address = Some(a.clone());
    }
    Ok(file)
}

/// Resolves the `[netd]` table and the flags into a validated configuration. In lab mode
/// (`lab_range`), this host's subnet is claimed first ([`subnets::claim_patiently`]); the host
/// address defaults to [`default_host_address`].
pub async fn resolve_config(ctx: &Context, args: &Args) -> Result<NetConfig, RunError> {
    let mut file = file_with_flags(ctx, args)?;
    if let Some(lab) = LabConfig::from_file(&file)? {
        let fixed = match &file.subnet {
            Some(s) => Some(s.parse().map_err(|source| ConfigError::SubnetSyntax {
                value: s.clone(),
                source,
            })?),
            None => None,
        };
        let subnet = subnets::claim_patiently(
            &ctx.bus,
            &ctx.config.host,
            &lab,
            fixed,
            subnets::CLAIM_PATIENCE,
        )
        .await?;
        if fixed.is_none() {
            // An allocated subnet's gateway is its first host.
            file.subnet = Some(subnet.to_string());
            file.gateway = None;
        }
    }
    let mut cfg = NetConfig::from_file(file)?;
    fill_host_address(&mut cfg, &ctx.config.nats.urls).await;
    Ok(cfg)
}

async fn fill_host_address(cfg: &mut NetConfig, nats_urls: &[String]) {
    if cfg.peers.host_address.is_none() {
        cfg.peers.host_address = default_host_address(nats_urls).await;
        match cfg.peers.host_address {
            Some(a) => tracing::info!(host_address = %a, "host address (from the route to NATS)"),
            None => tracing::info!(
                "no host address: every NATS URL is loopback; other hosts cannot route to this \
                 host's VMs (set [netd] host_address)"
            ),
        }
    }
}

/// The source address the kernel would use towards the first NATS URL that is not loopback
/// (a UDP `connect` sends nothing; it only asks the kernel for a route). None when every URL
/// is loopback or unresolvable: a single-host stack has no lab address.
pub async fn default_host_address(urls: &[String]) -> Option<Ipv4Addr> {
    for url in urls {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:4222")
        };
        let Ok(addrs) = tokio::net::lookup_host(hostport).await else {
            continue;
        };
        for addr in addrs {
            if !addr.is_ipv4() || addr.ip().is_loopback() {
                continue;
            }
            let Ok(sock) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
                continue;
            };
            if sock.connect(addr).await.is_err() {
                continue;
            }
            if let Ok(local) = sock.local_addr()
                && let IpAddr::V4(a) = local.ip()
                && route::usable_next_hop(local.ip())
            {
                return Some(a);
            }
        }
    }
    None
}

/// Runs netd until `shutdown` is cancelled, then applies the exit policy ([`exit`]): with no VM
/// holding its network the table and the bridge are removed; otherwise taps, bridge and rules
/// outlive the process, so VMs keep their network while netd restarts.
pub async fn run(ctx: Context, args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let cfg = resolve_config(&ctx, &args).await?;
    let subnet = cfg.subnet.to_string();
    let host_addr = cfg.peers.host_address;
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
    let spec = match host_addr {
        Some(a) => spec.with_meta(service::META_HOST_ADDR, a.to_string()),
        None => spec,
    };
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    ops::register(&mut host, &netd).await?;
    host.spawn(events::watch(netd.clone(), subs, shutdown.clone()));
    host.spawn(reconcile::periodic(netd.clone(), shutdown.clone()));
    host.spawn(peers::periodic(netd.clone(), shutdown.clone()));
    host.run(shutdown).await;
    match peers::remove_all(&netd).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(routes = n, "removed the routes to peer hosts"),
        Err(e) => tracing::warn!(error = %chain(&e), "removing the routes to peer hosts failed"),
    }
    if let Err(e) = exit::on_exit(&netd).await {
        tracing::warn!(error = %chain(&e), "cleaning up on exit failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loopback_only_bus_gives_no_host_address() {
        let urls = [
            "nats://127.0.0.1:4222".to_owned(),
            "nats://localhost".to_owned(),
        ];
        assert_eq!(default_host_address(&urls).await, None);
        assert_eq!(default_host_address(&[]).await, None);
    }
}
