//! Connecting to NATS.
//!
//! The connection retries the initial connect and reconnects forever: a service outlives a NATS
//! restart and resubscribes by itself (async-nats replays subscriptions on reconnect), so an
//! operator can restart or upgrade nats-server under a running stack.
//!
//! In a lab the configured URLs are tried in the order given (this host's node first, the
//! others to fail over to), and a connection whose server stops answering is noticed within
//! a few seconds (a PING every [`PING_INTERVAL`]; the third one unanswered drops it) and
//! replaced by one to the next node, rather than after async-nats' default of two minutes.

use std::time::Duration;

use async_nats::{ConnectOptions, Event};

use crate::config::{NatsAuth, NatsOptions};
use crate::error::BusError;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the client pings its server. async-nats drops the connection when a third PING
/// goes unanswered, so a dead server or a cut link is noticed after 4–6 s.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// The longest wait between reconnect attempts: short, so a restarted server is found quickly.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Connects with `opts`. With `wait_for_server`, the first connection is retried in the
/// background and this returns at once (services); without it, an unreachable server is an
/// immediate error (the CLI wants to say so rather than hang).
pub async fn connect(
    opts: &NatsOptions,
    wait_for_server: bool,
) -> Result<async_nats::Client, BusError> {
    connect_observed(opts, wait_for_server, None).await
}

/// [`connect`], also sending every connection event (connected, disconnected, errors) to
/// `events` when given: for a long-lived client that shows its connection state, such as
/// `banger tui`. A closed receiver is ignored.
pub async fn connect_observed(
    opts: &NatsOptions,
    wait_for_server: bool,
    events: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
) -> Result<async_nats::Client, BusError> {
    if opts.require_auth && opts.auth == NatsAuth::None {
        return Err(BusError::Config(
            "this installation requires NATS credentials (nats.require_auth), but none were \
             given: set --nats-creds, --nats-nkey, --nats-user/--nats-password or --nats-token"
                .into(),
        ));
    }
    let mut o = match &opts.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(t) => ConnectOptions::with_token(t.clone()),
        NatsAuth::NkeyFile(path) => {
            let seed = std::fs::read_to_string(path).map_err(|source| BusError::Credentials {
                path: path.display().to_string(),
                source,
            })?;
            ConnectOptions::with_nkey(seed.trim().to_owned())
        }
        NatsAuth::CredsFile(path) => {
            ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| BusError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?
        }
    };
    if let Some(ca) = &opts.tls_ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &opts.tls_client {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    if opts.require_tls {
        o = o.require_tls(true);
    }
    if let Some(prefix) = &opts.inbox_prefix {
        o = o.custom_inbox_prefix(prefix);
    }
    o = o
        .name(&opts.name)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        // The URLs' order is the operator's: this host's node first (docs/lab.md).
        .retain_servers_order()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .reconnect_to_server_callback(|servers, _info| async move { no_pause_for(&servers) })
        .event_callback(move |event| {
            if let Some(tx) = &events {
                let _ = tx.send(event.clone());
            }
            log_event(event)
        });
    if wait_for_server {
        o = o.retry_on_initial_connect();
    }
    let urls = opts.urls.join(",");
    let addrs: Vec<async_nats::ServerAddr> = opts
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| BusError::Config(format!("invalid NATS URL in {urls:?}: {e}")))?;
    let client = o
        .connect(addrs)
        .await
        .map_err(|source| BusError::Connect { urls, source })?;
    if opts.require_auth {
        check_server_demands_auth(&client).await?;
    }
    Ok(client)
}

/// Logs a connection event at the level an operator wants it.
async fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS, reconnecting"),
        Event::ClientError(e) => tracing::warn!(error = %e, "NATS client error"),
        Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
        other => tracing::debug!(event = %other, "NATS event"),
    }
}

/// With `require_auth`, credentials are not enough: an open server accepts any credentials, so
/// a service pointed at the wrong (or a reconfigured) server would run unprotected. The
/// server's INFO says whether it demands authentication; refuse when it does not. A service
/// that is still waiting for its first connection waits here until the server answers.
async fn check_server_demands_auth(client: &async_nats::Client) -> Result<(), BusError> {
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(AUTH_CHECK_POLL).await;
    }
    let info = client.server_info();
    if info.auth_required {
        Ok(())
    } else {
        Err(BusError::Config(format!(
            "this installation requires NATS authentication (nats.require_auth), but the server \
             {} ({}) does not require any: refusing to run against an open server",
            info.server_name, info.host
        )))
    }
}

/// How often the auth check looks whether the first connection is made.
const AUTH_CHECK_POLL: Duration = Duration::from_millis(50);

/// Delay before connection attempt `attempts` (async-nats counts from 1, and asks before the
/// very first attempt too): none for the first, so a CLI command does not start with a pause,
/// then 100 ms doubling up to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1 << (attempts - 2).min(6));
    Duration::from_millis(ms).min(MAX_RECONNECT_DELAY)
}

/// The one server to connect to with no pause at all, when there is exactly one and it has not
/// failed yet (a local stack's first connection, or its first reconnect after a restart).
///
/// async-nats sleeps before every attempt even when [`reconnect_delay`] says zero, and a zero
/// sleep still waits for the timer's next millisecond tick: 0.5–1 ms at the start of every
/// CLI command (strace shows a 1 ms `epoll_wait` before the `connect`). A server chosen here
/// with a delay of zero is connected to at once. With several URLs (a lab) this returns
/// `None` and async-nats' own selection runs, trying each URL in order within one attempt; after
/// a failure it returns `None` too, so the back-off of [`reconnect_delay`] applies.
fn no_pause_for(servers: &[async_nats::Server]) -> Option<async_nats::ReconnectToServer> {
    match servers {
        [only] if only.failed_attempts == 0 => Some(async_nats::ReconnectToServer {
            addr: only.addr.clone(),
            delay: Some(Duration::ZERO),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod delay_tests {
    use super::*;

    fn server(url: &str, failed_attempts: usize) -> async_nats::Server {
        async_nats::Server {
            addr: url.parse().unwrap(),
            failed_attempts,
            did_connect: false,
            is_discovered: false,
            last_error: None,
        }
    }

    #[test]
    fn only_a_lone_server_that_has_not_failed_is_connected_to_without_a_pause() {
        let chosen = no_pause_for(&[server("nats://127.0.0.1:4222", 0)]).unwrap();
        assert_eq!(chosen.addr.as_url_str(), "nats://127.0.0.1:4222");
        assert_eq!(chosen.delay, Some(Duration::ZERO));
        assert!(no_pause_for(&[server("nats://127.0.0.1:4222", 1)]).is_none());
        assert!(
            no_pause_for(&[
                server("nats://127.0.0.1:4222", 0),
                server("nats://127.0.0.2:4222", 0)
            ])
            .is_none()
        );
    }

    #[test]
    fn the_first_attempt_is_immediate_and_later_ones_back_off_to_the_cap() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(200));
        assert_eq!(reconnect_delay(40), MAX_RECONNECT_DELAY);
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use banger_testkit::{NatsServer, wait_until};

    fn options(urls: &[String]) -> NatsOptions {
        let mut o = NatsOptions::plain(urls[0].clone(), "order-test");
        o.urls = urls.to_vec();
        o
    }

    /// The configured order is kept: every connection goes to the first URL (a shuffled list
    /// would pick the second about half the time), and when that server dies the client fails
    /// over to the next one.
    #[tokio::test]
    async fn the_first_url_is_used_and_the_next_one_on_failure() {
        let (mut first, second) = (NatsServer::start(), NatsServer::start());
        let urls = [first.url(), second.url()];
        for _ in 0..8 {
            let client = connect(&options(&urls), false).await.unwrap();
            assert_eq!(
                client.server_info().port,
                first.port(),
                "connected to {:?}",
                client.server_info()
            );
        }
        let client = connect(&options(&urls), false).await.unwrap();
        first.stop();
        wait_until(
            "the client to fail over to the second server",
            Duration::from_secs(20),
            || async {
                client.connection_state() == async_nats::connection::State::Connected
                    && client.server_info().port == second.port()
            },
        )
        .await;
    }
}
