//! The common `main` of a banger service: runtime, telemetry, config, connection, signals.
//!
//! A service binary is a page: parse its flags, then call [`service_main`] with its library's
//! `run`. Integration tests call the same `run` with a [`Context`] they build themselves.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::client::Bus;
use crate::config::{CommonArgs, CommonConfig};
use crate::{connect, shutdown, telemetry};

/// What every service's `run` receives.
#[derive(Clone, Debug)]
pub struct Context {
    /// The bus connection.
    pub bus: Bus,
    /// Shared configuration (and access to the service's own config table).
    pub config: CommonConfig,
}

impl Context {
    /// Connects to NATS as configured (retrying in the background until the server answers).
    pub async fn connect(config: CommonConfig) -> Result<Self, crate::BusError> {
        let client = connect::connect(&config.nats, true).await?;
        Ok(Self {
            bus: Bus::new(client, config.subjects.clone()),
            config,
        })
    }
}

/// Runs service `name`: sets up logging and tracing, resolves its config, makes its directories
/// owner-only (umask 077; what an earlier version left open is repaired, with a WARN per path:
/// see [`crate::private`]), connects, and runs `run` until SIGTERM or SIGINT. Errors are
/// printed with their whole cause chain. The log's first line says the service starts (with
/// its pid), its last why it exits: the signal and its sender, or the error.
pub fn service_main<F, Fut, E>(name: &'static str, common: &CommonArgs, run: F) -> ExitCode
where
    F: FnOnce(Context, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    // Before any thread or file exists: everything this process creates is owner-only.
    crate::private::restrict_umask();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let _telemetry = telemetry::init(name, common.log_format);
        let result = async {
            // First, so a SIGTERM that arrives while the service starts is handled (and its
            // sender logged) instead of killing the process silently.
            let shutdown =
                shutdown::on_signals().map_err(|e| format!("installing signal handlers: {e}"))?;
            let config = CommonConfig::resolve(common, name).map_err(|e| chain(&e))?;
            tracing::info!(
                target: shutdown::LIFECYCLE,
                pid = std::process::id(),
                host = %config.host,
                nats = %config.nats.urls.join(","),
                prefix = %config.subjects.prefix(),
                version = env!("CARGO_PKG_VERSION"),
                "{name} starting"
            );
            secure_dirs(&config, name);
            let ctx = Context::connect(config).await.map_err(|e| chain(&e))?;
            run(ctx, shutdown).await.map_err(|e| chain(&e))
        }
        .await;
        // The last line of every service's log says why it exits. Logs go to stderr, which
        // is unbuffered: the line is written before the process ends.
        match result {
            Ok(()) => {
                let why = shutdown::reason().unwrap_or("its run ended on its own");
                tracing::info!(target: shutdown::LIFECYCLE, "{name} exiting: {why}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                tracing::error!(target: shutdown::LIFECYCLE, "{name} exiting on error: {msg}");
                eprintln!("{name}: error: {msg}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Repairs what an earlier version left open: the shared state and runtime directories
/// themselves, and the service's own subtrees below them.
fn secure_dirs(config: &CommonConfig, name: &str) {
    let state = config.service_state_dir(name);
    let runtime = config.runtime_dir.join(name);
    crate::private::secure_and_warn(
        &[&state, &runtime],
        &[&config.state_dir, &config.runtime_dir],
    );
}

/// Formats an error and its sources as `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        // Some errors (async-nats's) already print their source; don't say it twice.
        if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}
