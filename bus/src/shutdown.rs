//! Graceful shutdown on SIGTERM and SIGINT, and who asked for it.
//!
//! A service's `run` takes a [`CancellationToken`]; `main` cancels it when a signal arrives.
//! Tests cancel it directly, so they drive exactly the same shutdown path as production.
//!
//! The log says which process sent the signal (its pid and command line, from the signal's
//! `siginfo`): a service stopped by someone else's `banger down` names that `banger down`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

pub use tokio_util::sync::CancellationToken;

/// The `tracing` target of the lines that say why a service starts and stops. The log filter
/// keeps it at `info` whatever `RUST_LOG` says, unless `RUST_LOG` names it or is `off`.
pub const LIFECYCLE: &str = "banger::lifecycle";

/// The pid that sent the last SIGTERM / SIGINT (0: none yet, or the kernel).
static TERM_SENDER: AtomicI32 = AtomicI32::new(0);
static INT_SENDER: AtomicI32 = AtomicI32::new(0);

/// Why the service is stopping, once a signal said so.
static REASON: OnceLock<String> = OnceLock::new();

/// Why the service was asked to stop (`SIGTERM from pid 123 (banger down)`), if it was.
pub fn reason() -> Option<&'static str> {
    REASON.get().map(String::as_str)
}

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second signal is not handled
/// here: the default disposition is restored for neither, so a second Ctrl-C while draining is
/// ignored rather than killing in-flight work; use SIGKILL to force.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before tokio's own handlers, so each sender is stored before the stream that
    // wakes the task below is notified.
    record_sender(libc::SIGTERM, &TERM_SENDER)?;
    record_sender(libc::SIGINT, &INT_SENDER)?;
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        let why = tokio::select! {
            _ = term.recv() => describe("SIGTERM", TERM_SENDER.load(Ordering::SeqCst)),
            _ = int.recv() => describe("SIGINT", INT_SENDER.load(Ordering::SeqCst)),
        };
        tracing::info!(target: LIFECYCLE, "{why} received, shutting down");
        let _ = REASON.set(why);
        t.cancel();
    });
    Ok(token)
}

/// Stores the sender's pid of every `signal` in `slot`.
fn record_sender(signal: libc::c_int, slot: &'static AtomicI32) -> std::io::Result<()> {
    // SAFETY: the action only reads the siginfo the kernel passed and stores an integer in an
    // atomic, both async-signal-safe; it allocates and locks nothing.
    unsafe {
        signal_hook_registry::register_sigaction(signal, move |info: &libc::siginfo_t| {
            // SAFETY: for a signal sent with kill(2) or pidfd_send_signal(2) (SI_USER) the
            // kernel fills si_pid; for others it reads as 0 or another process-related pid.
            slot.store(info.si_pid(), Ordering::SeqCst);
        })
    }
    .map(drop)
}

/// `SIGTERM from pid 123 (banger --state-dir ... down)`, or the signal alone when the sender
/// is unknown.
fn describe(signal: &str, sender: i32) -> String {
    if sender <= 0 {
        return signal.to_owned();
    }
    let cmdline = std::fs::read(format!("/proc/{sender}/cmdline"))
        .ok()
        .map(|raw| {
            let text: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            text.join(" ")
        })
        .filter(|c| !c.is_empty());
    match cmdline {
        Some(c) => format!("{signal} from pid {sender} ({c})"),
        None => format!("{signal} from pid {sender} (already exited)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_names_its_sender_when_it_is_known() {
        let me = i32::try_from(std::process::id()).unwrap();
        let text = describe("SIGTERM", me);
        assert!(
            text.starts_with(&format!("SIGTERM from pid {me} (")),
            "{text}"
        );
        assert_eq!(describe("SIGINT", 0), "SIGINT");
    }

    #[tokio::test]
    async fn the_token_is_cancelled_and_the_reason_names_who_sent_sigterm() {
        let token = on_signals().unwrap();
        // SAFETY: kill with our own pid and SIGTERM; the handler above catches it.
        let rc = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        assert_eq!(rc, 0);
        tokio::time::timeout(std::time::Duration::from_secs(10), token.cancelled())
            .await
            .unwrap();
        let me = std::process::id();
        let why = reason().unwrap();
        assert!(
            why.starts_with(&format!("SIGTERM from pid {me} (")),
            "{why}"
        );
    }
}
