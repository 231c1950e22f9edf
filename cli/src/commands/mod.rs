//! One module per command group.

pub mod image;
pub mod status;
pub mod vm;

use crate::App;

/// The commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show every banger service on every host, as the NATS service API reports them
    Status(status::StatusArgs),
    /// Create, run and inspect VMs
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Register and inspect the images VMs boot from
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// Runs `cmd` and returns the exit code.
pub async fn dispatch(app: &App, cmd: Command) -> anyhow::Result<u8> {
    match cmd {
        Command::Status(a) => status::run(app, a).await,
        Command::Vm(c) => vm::run(app, c).await,
        Command::Image(c) => image::run(app, c).await,
    }
}
