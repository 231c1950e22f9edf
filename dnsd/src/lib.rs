//! dnsd: the authoritative DNS server for `vm.`, serving `<name>.vm` and `<name>.<host>.vm` for
//! every running VM of every host.
//!
//! Start-up order matters for correctness: the listeners are bound first (a taken port is a
//! start-up error, not a silent half-service), then the event subscription is opened, then the
//! zone is rebuilt from `vm.list` — so no event can fall between the list and the subscription —
//! and only then does DNS start answering, so a restart never serves a transiently empty zone.
//! After that, events update the zone as they arrive and a periodic rebuild repairs anything
//! missed. The bus answers `<p>.dns.records|lookup|status`.

pub mod config;
pub mod follow;
pub mod listen;
pub mod mmsg;
pub mod ops;
pub mod rebuild;
pub mod registry;
pub mod state;
pub mod udp;
pub mod wire;
pub mod wire_index;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use banger_bus::config::CommonArgs;
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::op::{self, Lab};
use banger_proto::service;

use crate::config::DnsdConfig;
use crate::registry::ZoneStore;
use crate::state::State;

/// How long the DNS server may take to stop after shutdown is asked.
const DNS_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Address to answer DNS on, UDP and TCP; repeat for several. Replaces `[dnsd] listen`
    /// [default: 127.0.0.1:42069]
    #[arg(long = "listen", env = "BANGER_DNSD_LISTEN", value_delimiter = ',')]
    pub listen: Vec<SocketAddr>,

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
    /// The `[dnsd]` settings are invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A listener could not be bound.
    #[error("opening the DNS listeners")]
    Bind(#[source] listen::BindError),
    /// The zone could not be built.
    #[error("building the empty zone")]
    Zone(#[source] zone::ZoneError),
    /// The DNS server stopped by itself (a socket failed).
    #[error("the DNS server stopped unexpectedly")]
    DnsServer,
}

/// Checks the settings before anything connects: reads the config file, validates `[dnsd]`
/// and `--listen`, and binds (then releases) every listener, so a typo, an address that is not
/// local or a port already taken is a clear start-up error even while NATS is unreachable
/// (connecting to NATS retries until it answers). [`run`] checks again, for real.
pub fn preflight(args: &Args) -> Result<config::Settings, RunError> {
    let common = banger_bus::config::CommonConfig::resolve(&args.common, service::DNSD)?;
    let settings = common
        .section::<DnsdConfig>(service::DNSD)?
        .resolve(&args.listen)?;
    listen::check_bindable(&settings.listen).map_err(RunError::Bind)?;
    Ok(settings)
}

/// Runs dnsd until `shutdown` is cancelled.
pub async fn run(ctx: Context, args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let settings = ctx
        .config
        .section::<DnsdConfig>(service::DNSD)?
        .resolve(&args.listen)?;
    let bound = listen::bind_all(&settings.listen)
        .await
        .map_err(RunError::Bind)?;
    let listeners: Vec<SocketAddr> = bound.iter().map(|b| b.addr).collect();
    let first_serial = u32::try_from(banger_bus::now_ms() / 1000).unwrap_or(u32::MAX);
    let store = ZoneStore::new(settings.zone.clone(), first_serial).map_err(RunError::Zone)?;
    let state = State::new(store, listeners.clone());
    let listen_meta = listeners
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(listen = %listen_meta, "DNS listeners bound");

    // Everything below stops on `stop`: the caller's shutdown, or a fatal DNS server failure.
    let stop = shutdown.child_token();
    let failed = Arc::new(AtomicBool::new(false));

    let spec = ServiceSpec::new(service::DNSD, "<name>.vm records", &ctx.config.host)
        .with_meta(service::META_DNS_LISTEN, listen_meta);
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    let subjects = ctx.bus.subjects().clone();
    host.serve(op::dns::Records, &Lab, state.clone(), |s, req| async move {
        ops::records::records(&s, req)
    })
    .await?;
    host.serve(op::dns::Lookup, &Lab, state.clone(), |s, req| async move {
        ops::lookup::lookup(&s, req)
    })
    .await?;
    host.serve(op::dns::Status, &Lab, state.clone(), |s, req| async move {
        ops::status::status(&s, req)
    })
    .await?;
    host.check_serves(op::dns::ALL)?;

    // Subscribe before the first rebuild so nothing falls between the two.
    let events = ctx
        .bus
        .subscribe_events(subjects.events_filter(None, None, None), None)
        .await?;
    host.spawn(follow::follow(events, state.clone(), stop.clone()));
    tokio::select! {
        () = stop.cancelled() => {}
        () = rebuild::rebuild_and_log(&ctx.bus, &state, settings.gather_timeout) => {}
    }
    host.spawn(rebuild::rebuild_loop(
        ctx.bus.clone(),
        state.clone(),
        settings.rebuild_interval,
        settings.gather_timeout,
        stop.clone(),
    ));

    let (mut server, udp_workers) =
        listen::serve(bound, state.store.current()).map_err(RunError::Bind)?;
    let server_stop = stop.clone();
    let server_failed = failed.clone();
    host.spawn(async move {
        tokio::select! {
            () = server_stop.cancelled() => {
                match tokio::time::timeout(DNS_SHUTDOWN_TIMEOUT, server.shutdown_gracefully()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "stopping the DNS server"),
                    Err(_) => tracing::warn!("the DNS server did not stop in time"),
                }
            }
            r = server.block_until_done() => {
                match r {
                    Ok(()) => tracing::error!("the DNS server stopped by itself"),
                    Err(e) => tracing::error!(error = %e, "the DNS server failed"),
                }
                server_failed.store(true, Ordering::SeqCst);
                server_stop.cancel();
            }
        }
        let stopped = tokio::task::spawn_blocking(move || {
            for w in udp_workers {
                w.stop();
            }
        });
        if stopped.await.is_err() {
            tracing::warn!("stopping the DNS UDP threads failed");
        }
    });
    tracing::info!(listen = ?listeners, records = state.store.snapshot().record_count(), "answering DNS for vm.");
    host.run(stop).await;
    if failed.load(Ordering::SeqCst) {
        return Err(RunError::DnsServer);
    }
    Ok(())
}
