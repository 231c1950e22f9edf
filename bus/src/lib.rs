//! banger's service runtime.
//!
//! Everything a banger process needs to take part in the bus, so each service's `main.rs` stays a
//! page: [`config`] (flags, environment, TOML), [`connect`] (NATS with the auth and TLS options a
//! lab needs, reconnecting forever), [`telemetry`] (logs and OpenTelemetry), [`client::Bus`]
//! (typed request/reply with deadlines, scatter-gather, events), [`service::ServiceHost`]
//! (NATS service API registration, typed endpoints, graceful drain), [`lab`] and [`heartbeat`]
//! (who is there: key-value buckets read without a consumer, heartbeat keys that expire),
//! [`propagation`] (W3C trace context in NATS headers), [`shutdown`] (SIGTERM/SIGINT) and [`private`] (owner-only files
//! and directories, repaired at start-up).

pub mod client;
pub mod config;
pub mod connect;
pub mod error;
pub mod events;
pub mod heartbeat;
pub mod history;
pub mod kv;
pub mod lab;
pub mod private;
pub mod propagation;
pub mod runtime;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use client::Bus;
pub use error::{BusError, RequestError};
pub use service::ServiceHost;

/// Milliseconds since the Unix epoch, the timestamp unit of every wire type.
pub fn now_ms() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
