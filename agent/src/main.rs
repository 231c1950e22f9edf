//! `banger-agent`: parse flags, load the config, start logging, serve until SIGTERM.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use banger_agent::{Args, Config};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Plain text under journald/runit's svlogd; colours only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (config, warnings) = Config::load(&args).context("loading the agent config")?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    // One thread is plenty for a guest agent and keeps its footprint small; blocking reads
    // of /proc go to tokio's blocking pool.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(banger_agent::serve(config))
        .context("serving")?;
    Ok(())
}
