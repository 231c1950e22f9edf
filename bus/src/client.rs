//! The caller's side of the bus: typed requests with deadlines, scatter-gather, events and
//! service discovery.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use banger_proto::error::ErrorReply;
use banger_proto::event::VmEvent;
use banger_proto::op::Operation;
use banger_proto::{ApiError, ErrorCode, HostId, Subjects};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::{BusError, RequestError};
use crate::propagation;

/// Header carrying the stable error code of a failed request.
pub const ERROR_CODE_HEADER: &str = "Banger-Error-Code";
/// The service API's error message header.
pub const NATS_SERVICE_ERROR: &str = "Nats-Service-Error";
/// The service API's numeric error code header.
pub const NATS_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// Default deadline of a request: long enough for a VM create on a slow host.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a service-API scatter-gather waits for another answer after the latest one.
pub const DISCOVERY_STALL: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a gather has the answers it needs ([`Bus::gather_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enough {
    /// Keep gathering until the deadline.
    No,
    /// Stop now.
    Yes,
    /// Gather for at most this much longer (a later answer may say otherwise).
    After(Duration),
}

/// A connection to the bus under one subject prefix.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    subjects: Subjects,
}

/// One service instance, as `$SRV.PING` / `$SRV.INFO` / `$SRV.STATS` describe it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ServiceInstance {
    /// Service name.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Metadata (host, contract, ...).
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

impl ServiceInstance {
    /// The host this instance runs on, from its metadata.
    pub fn host(&self) -> Option<&str> {
        self.metadata
            .get(banger_proto::service::META_HOST)
            .map(String::as_str)
    }
}

impl Bus {
    /// Wraps a connected client.
    pub fn new(client: async_nats::Client, subjects: Subjects) -> Self {
        Self { client, subjects }
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The subject builder.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Calls operation `O` at `at` (the lab, or a host) and decodes its reply, within
    /// `timeout`. The subject, the request type and the reply type all come from `O`.
    pub async fn call<O: Operation>(
        &self,
        at: &O::At,
        req: &O::Request,
        timeout: Duration,
    ) -> Result<O::Reply, RequestError> {
        self.request(O::subject(&self.subjects, at), req, timeout)
            .await
    }

    /// Sends `req` to operation `O` at `at` and gathers every answer that arrives until
    /// `expect` answers came (when given) or `deadline` passed: for an operation every instance
    /// answers ([`Delivery::Broadcast`](banger_proto::op::Delivery), `vm.list`). Each answer is
    /// decoded on its own: one bad answer does not hide the others.
    pub async fn gather<O: Operation>(
        &self,
        at: &O::At,
        req: &O::Request,
        expect: Option<usize>,
        deadline: Duration,
    ) -> Result<Vec<Result<O::Reply, RequestError>>, BusError> {
        self.gather_subject(O::subject(&self.subjects, at), req, deadline, |out| {
            if expect.is_some_and(|n| out.len() >= n) {
                Enough::Yes
            } else {
                Enough::No
            }
        })
        .await
    }

    /// [`Bus::gather`], ending as soon as `done` says the answers so far are enough (it is
    /// asked after each answer; [`Enough::After`] shortens the wait), when `deadline` passed,
    /// or at once when nobody serves `O` (the server's "no responders": the result is then
    /// empty).
    pub async fn gather_until<O: Operation>(
        &self,
        at: &O::At,
        req: &O::Request,
        deadline: Duration,
        done: impl FnMut(&[Result<O::Reply, RequestError>]) -> Enough,
    ) -> Result<Vec<Result<O::Reply, RequestError>>, BusError> {
        self.gather_subject(O::subject(&self.subjects, at), req, deadline, done)
            .await
    }

    /// Sends `req` to a raw `subject` and decodes the reply, within `timeout`: the untyped
    /// path, for benchmarks and tests that speak to a subject the way `nats req` would.
    /// Services and the CLI use [`Bus::call`].
    pub async fn request<Req, Resp>(
        &self,
        subject: String,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let span = tracing::info_span!(
            "request",
            otel.name = %format!("send {subject}"),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %subject,
        );
        async {
            let payload = serde_json::to_vec(req).map_err(|source| RequestError::Encode {
                subject: subject.clone(),
                source,
            })?;
            let mut headers = HeaderMap::new();
            propagation::inject_current(&mut headers);
            let request = async_nats::Request::new()
                .payload(payload.into())
                .headers(headers)
                .timeout(Some(timeout));
            let msg = self
                .client
                .send_request(subject.clone(), request)
                .await
                .map_err(|e| {
                    use async_nats::client::RequestErrorKind as K;
                    match e.kind() {
                        K::NoResponders => RequestError::NoResponders {
                            subject: subject.clone(),
                        },
                        K::TimedOut => RequestError::Timeout {
                            subject: subject.clone(),
                            timeout_ms: timeout.as_millis(),
                        },
                        K::InvalidSubject | K::MaxPayloadExceeded | K::Other => {
                            RequestError::Transport {
                                subject: subject.clone(),
                                message: e.to_string(),
                            }
                        }
                    }
                })?;
            decode_reply(&subject, &msg)
        }
        .instrument(span)
        .await
    }

    async fn gather_subject<Req, Resp>(
        &self,
        subject: String,
        req: &Req,
        deadline: Duration,
        mut done: impl FnMut(&[Result<Resp, RequestError>]) -> Enough,
    ) -> Result<Vec<Result<Resp, RequestError>>, BusError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let span = tracing::info_span!(
            "gather",
            otel.name = %format!("send {subject}"),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.destination.name = %subject,
        );
        async {
            let payload = serde_json::to_vec(req).map_err(|source| BusError::Encode {
                subject: subject.clone(),
                source,
            })?;
            let inbox = self.client.new_inbox();
            let mut sub = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(|source| BusError::Subscribe {
                    subject: inbox.clone(),
                    source,
                })?;
            let mut headers = HeaderMap::new();
            propagation::inject_current(&mut headers);
            self.client
                .publish_with_reply_and_headers(subject.clone(), inbox, headers, payload.into())
                .await
                .map_err(|source| BusError::Publish {
                    subject: subject.clone(),
                    source,
                })?;
            let mut out = Vec::new();
            let last = tokio::time::Instant::now() + deadline;
            let mut end = last;
            while let Ok(Some(msg)) = tokio::time::timeout_at(end, sub.next()).await {
                // A no-responders status arrives as an empty message with a status.
                if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    break;
                }
                out.push(decode_reply(&subject, &msg));
                end = match done(&out) {
                    Enough::Yes => break,
                    Enough::No => last,
                    Enough::After(d) => last.min(tokio::time::Instant::now() + d),
                };
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// Publishes a lifecycle event on its subject from a producer span: a child of the current
    /// span, or the root of a new trace when there is none (an event a background task
    /// publishes, such as the health probe's or the console watch's), so every event carries a
    /// W3C `traceparent`.
    pub async fn publish_event(&self, host: &HostId, event: &VmEvent) -> Result<(), BusError> {
        let subject = self.subjects.event(host, &event.vm.id, event.kind);
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("send {subject}"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %subject,
        );
        let payload = serde_json::to_vec(event).map_err(|source| BusError::Encode {
            subject: subject.clone(),
            source,
        })?;
        let mut headers = HeaderMap::new();
        propagation::inject(&span, &mut headers);
        self.client
            .publish_with_headers(subject.clone(), headers, payload.into())
            .instrument(span)
            .await
            .map_err(|source| BusError::Publish { subject, source })
    }

    /// Finds service instances through `$SRV.PING` (all services, or those named `name`),
    /// collecting answers for at most `wait` (see [`Bus::service_verb`] for when it returns
    /// early).
    pub async fn ping(
        &self,
        name: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<ServiceInstance>, BusError> {
        let subject = match name {
            Some(n) => format!("{}.{n}", banger_proto::service::SRV_PING),
            None => banger_proto::service::SRV_PING.to_owned(),
        };
        self.discover(subject, wait).await
    }

    /// The first service instance (of service `name`) to answer `$SRV.PING`, within `wait`:
    /// one round trip when an instance is alive, none found at once when nothing runs it (the
    /// server's "no responders"). For picking *a* live instance, where waiting for every
    /// answer ([`Bus::ping`]) would cost the whole stall window.
    pub async fn ping_first(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<Option<ServiceInstance>, BusError> {
        let subject = format!("{}.{name}", banger_proto::service::SRV_PING);
        let values = self.collect_verb(subject, wait, Some(1)).await?;
        Ok(values
            .into_iter()
            .find_map(|v| serde_json::from_value(v).ok()))
    }

    /// Collects raw JSON answers of a service-API verb (`$SRV.INFO`, `$SRV.STATS`, ...).
    ///
    /// Nobody knows in advance how many instances will answer, so this is a scatter-gather
    /// with a stall timer: it returns [`DISCOVERY_STALL`] after the latest answer, or after
    /// `wait` at the latest. With every instance on one host or a LAN the answers arrive
    /// within a millisecond or two of each other; the stall leaves room for a spread of
    /// 100 ms, and every `vm` command no longer pays the whole window. When no instance exists
    /// at all, the server's "no responders" status ends it at once, so a long `wait` only costs
    /// time when instances exist but are slow to answer.
    pub async fn service_verb(
        &self,
        subject: String,
        wait: Duration,
    ) -> Result<Vec<serde_json::Value>, BusError> {
        self.collect_verb(subject, wait, None).await
    }

    /// [`Bus::service_verb`], ending as soon as `enough` answers came when it is given.
    async fn collect_verb(
        &self,
        subject: String,
        wait: Duration,
        enough: Option<usize>,
    ) -> Result<Vec<serde_json::Value>, BusError> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| BusError::Subscribe {
                subject: inbox.clone(),
                source,
            })?;
        self.client
            .publish_with_reply(subject.clone(), inbox, bytes::Bytes::new())
            .await
            .map_err(|source| BusError::Publish { subject, source })?;
        let mut out = Vec::new();
        let window_end = tokio::time::Instant::now() + wait;
        let mut end = window_end;
        while let Ok(Some(msg)) = tokio::time::timeout_at(end, sub.next()).await {
            // The server answers "no responders" at once when nothing subscribes to the verb:
            // no instance exists, so there is nothing to wait for. (It is sent only then, so it
            // never cuts short a gather that real instances answer.)
            if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                break;
            }
            if let Ok(v) = serde_json::from_slice(&msg.payload) {
                out.push(v);
            }
            if enough.is_some_and(|n| out.len() >= n) {
                break;
            }
            end = window_end.min(tokio::time::Instant::now() + DISCOVERY_STALL);
        }
        Ok(out)
    }

    async fn discover(
        &self,
        subject: String,
        wait: Duration,
    ) -> Result<Vec<ServiceInstance>, BusError> {
        let values = self.service_verb(subject, wait).await?;
        Ok(values
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect())
    }
}

/// Decodes a reply: an error (service-API error headers, body `{"error": ...}`) or the result.
pub fn decode_reply<Resp: DeserializeOwned>(
    subject: &str,
    msg: &Message,
) -> Result<Resp, RequestError> {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    if let Some(message) = header(NATS_SERVICE_ERROR) {
        // Prefer the body's error object; fall back to the headers (a reply from a peer that
        // only set the service-API headers).
        if let Ok(reply) = serde_json::from_slice::<ErrorReply>(&msg.payload) {
            return Err(RequestError::Remote(reply.error));
        }
        let code =
            header(ERROR_CODE_HEADER).map_or(ErrorCode::Internal, |c| ErrorCode::from_wire(&c));
        return Err(RequestError::Remote(ApiError::new(code, message)));
    }
    serde_json::from_slice(&msg.payload).map_err(|source| RequestError::Decode {
        subject: subject.to_owned(),
        source,
    })
}

#[cfg(test)]
mod discovery_tests {
    use super::*;
    use banger_testkit::NatsServer;

    async fn bus(nats: &NatsServer) -> Bus {
        let client = async_nats::connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("connect to the test nats-server: {e}"));
        Bus::new(client, Subjects::default())
    }

    /// Nothing runs the service: the server's "no responders" ends discovery, rather than the
    /// (here absurdly long) window. The outer deadline only turns a hang into a failure.
    #[tokio::test]
    async fn discovery_of_a_service_nobody_runs_ends_at_no_responders() {
        let nats = NatsServer::start();
        let bus = bus(&nats).await;
        let found = tokio::time::timeout(
            Duration::from_secs(30),
            bus.ping(Some("nobody-runs-this"), Duration::from_secs(3600)),
        )
        .await;
        match found {
            Ok(Ok(found)) => assert!(found.is_empty(), "found {found:?}"),
            Ok(Err(e)) => panic!("ping failed: {e}"),
            Err(_) => panic!("discovery waited for its window although nobody listens"),
        }
    }

    /// An instance that takes longer than the stall timer to give its first answer is still
    /// found: the stall only starts after an answer.
    #[tokio::test]
    async fn a_slow_instance_is_found_within_the_window() {
        let nats = NatsServer::start();
        let bus = bus(&nats).await;
        let mut sub = bus
            .client()
            .subscribe(format!("{}.slow", banger_proto::service::SRV_PING))
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        bus.client()
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
        let responder = bus.client().clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                // A loaded host: the answer comes well after DISCOVERY_STALL.
                tokio::time::sleep(DISCOVERY_STALL * 5).await;
                let instance = ServiceInstance {
                    name: "slow".into(),
                    id: "1".into(),
                    version: "0".into(),
                    metadata: HashMap::new(),
                };
                if let (Some(reply), Ok(body)) = (msg.reply, serde_json::to_vec(&instance)) {
                    let _ = responder.publish(reply, body.into()).await;
                }
            }
        });
        let found = bus
            .ping(Some("slow"), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("ping failed: {e}"));
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["slow"]);
    }

    /// `ping_first` gives the instance that answered, even beside one that stays silent, and
    /// nothing (at once: no responders) when nobody runs the service. (That it returns without
    /// the stall window is a latency property: `vm create` in `scripts/bench` measures it.)
    #[tokio::test]
    async fn ping_first_returns_with_the_first_answer() {
        let nats = NatsServer::start();
        let bus = bus(&nats).await;
        let subject = format!("{}.pair", banger_proto::service::SRV_PING);
        let mut quick = bus
            .client()
            .subscribe(subject.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Subscribed but silent: an instance that will not answer in time.
        let _silent = bus
            .client()
            .subscribe(subject)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        bus.client()
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
        nats.wait_for_subscription("$SRV.PING.pair");
        let responder = bus.client().clone();
        tokio::spawn(async move {
            while let Some(msg) = quick.next().await {
                let instance = ServiceInstance {
                    name: "pair".into(),
                    id: "quick".into(),
                    version: "0".into(),
                    metadata: HashMap::new(),
                };
                if let (Some(reply), Ok(body)) = (msg.reply, serde_json::to_vec(&instance)) {
                    let _ = responder.publish(reply, body.into()).await;
                }
            }
        });
        let first = tokio::time::timeout(
            Duration::from_secs(30),
            bus.ping_first("pair", Duration::from_secs(3600)),
        )
        .await
        .unwrap_or_else(|_| panic!("ping_first did not return"))
        .unwrap_or_else(|e| panic!("ping_first failed: {e}"));
        assert_eq!(first.map(|i| i.id), Some("quick".to_owned()));
        // Nobody runs it: none, at once.
        let none = tokio::time::timeout(
            Duration::from_secs(30),
            bus.ping_first("nobody-runs-this", Duration::from_secs(3600)),
        )
        .await
        .unwrap_or_else(|_| panic!("ping_first waited although nobody listens"))
        .unwrap_or_else(|e| panic!("ping_first failed: {e}"));
        assert!(none.is_none());
    }
}
