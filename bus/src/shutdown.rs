//! Graceful shutdown on SIGTERM and SIGINT.
//!
//! A service's `run` takes a [`CancellationToken`]; `main` cancels it when a signal arrives.
//! Tests cancel it directly, so they drive exactly the same shutdown path as production.

pub use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second signal is not handled
/// here: the default disposition is restored for neither, so a second Ctrl-C while draining is
/// ignored rather than killing in-flight work; use SIGKILL to force.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
        t.cancel();
    });
    Ok(token)
}
