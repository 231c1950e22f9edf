//! The banger guest agent: answers the host's questions about the guest over vsock.
//!
//! It serves HTTP/1.1 on AF_VSOCK (port 52 by default) inside a real guest, or on a Unix socket
//! under the Firecracker simulator and in tests:
//!
//! - `GET /healthz` — [`health`]: uptime, hostname, boot id, load, memory, root filesystem;
//! - `GET /v1/info` — [`info`]: OS release, kernel, addresses;
//! - `POST /v1/exec` — [`exec`]: run a command (no shell), streaming its output.
//!
//! The wire types are in `banger_proto::agent`; the host-side client is the
//! `banger-agent-client` crate. `main.rs` parses flags and calls [`serve`].

pub mod config;
pub mod exec;
pub mod health;
pub mod info;
pub mod listen;
pub mod server;
pub mod utf8;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config};
pub use listen::{ListenAddr, Listener};

/// The agent's version, reported in health and info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Starting the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the listen address failed.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: ListenAddr,
        /// Why.
        #[source]
        source: listen::BindError,
    },
    /// Installing the signal handlers failed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Binds the configured address and serves until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let listener = Listener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let shutdown = CancellationToken::new();
    let server = server::run(config, listener, shutdown.clone());
    let mut server = std::pin::pin!(server);
    tokio::select! {
        () = server.as_mut() => return Ok(()),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
    server.await;
    Ok(())
}
