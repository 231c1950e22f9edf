//! `banger image ...`: images registered with stord.

use crate::App;

/// Image commands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {}

/// Runs an image command.
pub async fn run(_app: &App, cmd: ImageCommand) -> anyhow::Result<u8> {
    match cmd {}
}
