//! stord: owns base images, copy-on-write VM roots and persistent work disks.
//!
//! Answers `<p>.host.<host>.store.<op>` (see [`banger_proto::store`] for the operations), reacts
//! to this host's `deleted` events by removing what is left of the VM's volumes, and reconciles
//! at start-up: volume directories, loop and dm devices carrying this stord's naming that no
//! volume record explains are reported and removed.
//!
//! Layout: `<state_dir>/stord/` holds `stord.db` (the registry), `volumes/<vm id>/` (each VM's
//! root or exception store, and its work disk), `templates/` (pre-formatted work disks that new
//! ones are cloned from, see [`template`]) and `scratch/` (temporary files, emptied at start-up).
//! See the crate README for the configuration.

pub mod backend;
pub mod config;
pub mod db;
pub mod events;
pub mod flatten;
pub mod image;
pub mod ops;
pub mod reconcile;
pub mod retry;
pub mod state;
pub mod sys;
pub mod template;
pub mod workdisk;

use std::sync::Arc;

use banger_bus::config::CommonArgs;
use banger_bus::runtime::{Context, chain};
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::service;

use crate::config::StordFile;
use crate::state::{StartError, Stord};
use crate::sys::devmapper::LinuxBlockDevices;

/// Command-line flags of `banger-stord`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "banger-stord",
    version,
    about = "banger's per-host storage daemon: images, VM roots and work disks",
    long_about = "banger's per-host storage daemon. It registers base images, makes each VM's \
                  writable root as a copy-on-write of its image, and keeps each VM's persistent \
                  work disk. Run one per host, as root."
)]
pub struct Args {
    /// Shared flags: NATS connection, host id, directories.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Copy-on-write back-end for new roots: auto, dm, reflink or sparse (overrides
    /// `[stord] backend`).
    #[arg(long, env = "BANGER_STORD_BACKEND")]
    pub backend: Option<String>,
}

/// Why stord stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
    /// The `[stord]` table is invalid.
    #[error("invalid configuration")]
    Config(#[from] config::ConfigError),
    /// Start-up failed.
    #[error("starting stord")]
    Start(#[from] StartError),
}

/// Runs stord until `shutdown` is cancelled. Roots and work disks outlive the process.
pub async fn run(ctx: Context, args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let mut file: StordFile = ctx.config.section(service::STORD)?;
    if let Some(b) = args.backend {
        file.backend = Some(b);
    }
    let cfg = file.resolve()?;
    let root = ctx.config.service_state_dir(service::STORD);
    let st = tokio::task::spawn_blocking(move || {
        Stord::open(root, cfg, Arc::new(LinuxBlockDevices::open()))
    })
    .await
    .map_err(|e| StartError::Panicked(e.to_string()))??;
    let st = Arc::new(st);
    tracing::info!(
        backend = %st.backends.active().kind(),
        unsupported = ?st.backends.unsupported,
        state_dir = %st.dirs.root.display(),
        "storage back-end chosen"
    );

    // Subscribe before reconciling, so a `deleted` event during the pass is not missed.
    let deleted = events::subscribe(&ctx.bus, &ctx.config.host).await?;
    let rst = st.clone();
    match tokio::task::spawn_blocking(move || reconcile::reconcile(&rst)).await {
        Ok(Ok(report)) => report.log(),
        Ok(Err(e)) => tracing::warn!(error = %chain(&e), "start-up reconciliation failed"),
        Err(e) => tracing::warn!(error = %e, "start-up reconciliation panicked"),
    }

    let spec = ServiceSpec::new(
        service::STORD,
        "images, VM roots and work disks",
        &ctx.config.host,
    );
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    ops::register(&mut host, &st, &ctx.config.host).await?;
    host.spawn(events::watch(st.clone(), deleted, shutdown.clone()));
    host.run(shutdown).await;
    Ok(())
}
