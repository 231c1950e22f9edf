//! `banger ping`: does a service answer on the bus? For health checks (compose, systemd,
//! scripts): exit 0 when it does, 4 when it does not.

use std::time::Duration;

use banger_proto::service;

use crate::{App, exit};

/// Flags of `banger ping`.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The service to ping (vm-controller, netd, stord, dnsd); without it, only the bus
    /// connection is checked and every answering service is listed
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(service::ALL))]
    pub service: Option<String>,
    /// Only an instance on this host counts [default: this host's id]
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// How long to wait for answers, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub wait_ms: u64,
}

/// Runs `banger ping`.
pub async fn run(app: &App, args: PingArgs) -> anyhow::Result<u8> {
    let answers = app
        .bus
        .ping(args.service.as_deref(), Duration::from_millis(args.wait_ms))
        .await?;
    let Some(name) = args.service else {
        for s in &answers {
            println!("{} on {}", s.name, s.host().unwrap_or("?"));
        }
        return Ok(exit::OK);
    };
    let host = args.host.unwrap_or_else(|| app.config.host.to_string());
    if answers.iter().any(|s| s.host() == Some(host.as_str())) {
        println!("{name} on {host} answers");
        Ok(exit::OK)
    } else {
        eprintln!("error: {name} on {host} does not answer $SRV.PING");
        Ok(exit::NOT_FOUND_OR_UNAVAILABLE)
    }
}
