//! A command the NATS server refuses ends at once with "permission denied".
//!
//! A NATS server answers a publish or subscribe outside the user's permissions with an
//! asynchronous `-ERR 'Permissions Violation ...'`, and the request itself simply gets no
//! reply: without this, a read-only viewer running `banger vm list` would wait for its whole
//! deadline and then be told to start the stack. The lab's membership read is the exception:
//! it is optional, and its command says "membership unknown" itself when it is refused.

use async_nats::{Event, ServerError};
use tokio::sync::mpsc::UnboundedReceiver;

use banger_proto::{ApiError, ErrorCode};

/// Waits for the first permissions violation the server reports for this connection (other
/// than one on `tolerated`, a JetStream name whose reads are optional) and returns it as a
/// `permission_denied` error naming `user`. Never returns when none comes.
pub(crate) async fn first_denial(
    mut events: UnboundedReceiver<Event>,
    user: Option<String>,
    tolerated: String,
) -> ApiError {
    while let Some(event) = events.recv().await {
        if let Event::ServerError(ServerError::Other(message)) = event
            && is_denial(&message)
            && !message.contains(&tolerated)
        {
            return denied(&message, user.as_deref());
        }
    }
    std::future::pending().await
}

/// Whether a server error is a permissions violation.
fn is_denial(message: &str) -> bool {
    message.to_lowercase().contains("permissions violation")
}

fn denied(message: &str, user: Option<&str>) -> ApiError {
    let who = user.map_or_else(
        || "this NATS user".to_owned(),
        |u| format!("NATS user {u:?}"),
    );
    ApiError::new(
        ErrorCode::PermissionDenied,
        format!(
            "permission denied: {who} may not do this (the server said: {})",
            message.trim_matches('\'').trim()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_violation_ends_the_wait_with_permission_denied() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Event::Connected).unwrap();
        tx.send(Event::ServerError(ServerError::Other(
            "Permissions Violation for Publish to \"$JS.API.STREAM.INFO.KV_BANGER_NETD_SUBNETS\""
                .into(),
        )))
        .unwrap();
        tx.send(Event::ServerError(ServerError::Other(
            "Permissions Violation for Publish to \"$SRV.PING.vm-controller\"".into(),
        )))
        .unwrap();
        let e = first_denial(rx, Some("viewer".into()), "KV_BANGER_NETD_SUBNETS".into()).await;
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(e.message.contains("permission denied"), "{}", e.message);
        assert!(e.message.contains("\"viewer\""), "{}", e.message);
        assert!(
            e.message.contains("$SRV.PING.vm-controller"),
            "{}",
            e.message
        );
    }

    #[test]
    fn other_server_errors_are_not_denials() {
        assert!(!is_denial("Slow Consumer"));
        assert!(is_denial("Permissions Violation for Subscription to \"x\""));
    }
}
