//! stord: owns base images, copy-on-write VM roots and persistent work disks.
//!
//! Answers `<p>.host.<host>.store.<op>` and reacts to `deleted` events of its host.

use banger_bus::config::CommonArgs;
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::service;
use banger_proto::store::{ImageListReply, ImageListRequest};
use banger_proto::subject::StoreOp;

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
}

/// Why stord stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
}

/// Runs stord until `shutdown` is cancelled.
pub async fn run(ctx: Context, _args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let spec = ServiceSpec::new(
        service::STORD,
        "images, VM roots and work disks",
        &ctx.config.host,
    );
    let mut host = ServiceHost::start(&ctx.bus, spec).await?;
    let subject = ctx
        .bus
        .subjects()
        .host_store(&ctx.config.host, StoreOp::ImageList);
    host.endpoint("image.list", subject, |_: ImageListRequest| async {
        Ok(ImageListReply { images: Vec::new() })
    })
    .await?;
    host.run(shutdown).await;
    Ok(())
}
