//! The serving side of the bus: a service registered with the NATS service API, one endpoint
//! per typed operation ([`ServiceHost::serve`]), and a graceful drain.
//!
//! Each endpoint is a NATS subscription (in a queue group unless it is a broadcast endpoint).
//! Every request is handled in its own task, inside a span that continues the caller's trace;
//! the reply carries the handler span's `traceparent` back. On shutdown the endpoints
//! unsubscribe first (so no new work arrives), then in-flight handlers finish, then the service
//! deregisters — no request is dropped half-done.
//!
//! Error replies: the body is `{"error": {"code", "message"}}` and the service-API headers
//! `Nats-Service-Error` / `Nats-Service-Error-Code` plus `Banger-Error-Code` are set, so both
//! `nats req` users and header-only clients see the error. async-nats only counts errors in
//! `$SRV.STATS` when it also empties the body, so banger keeps its own per-endpoint error count
//! and publishes it in each endpoint's stats `data` (`{"errors": n, "last_error": "...",
//! "now_ms": ..., "started_ms": ...}`; `now_ms` is the host's clock when it answered, for skew
//! checks; `started_ms` gives uptime without parsing the API's RFC 3339 `started`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::service::ServiceExt;
use banger_proto::error::ErrorReply;
use banger_proto::op::{Delivery, OpInfo, Operation};
use banger_proto::{ApiError, ErrorCode};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::client::{Bus, ERROR_CODE_HEADER, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use crate::error::BusError;
use crate::propagation;

/// How long shutdown waits for in-flight handlers before giving up on them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each bus step of shutdown (unsubscribe, deregister, flush) may take. These wait on
/// the server; when it is gone too (the whole stack is stopping), shutdown must not hang.
const BUS_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// What a service registers as.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Service name (`[A-Za-z0-9_-]+`), e.g. `netd`.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// One line saying what it does.
    pub description: String,
    /// Metadata shown by `nats micro info` and `$SRV.PING` (host, contract, ...).
    pub metadata: HashMap<String, String>,
}

impl ServiceSpec {
    /// A spec with the host and contract metadata every banger service carries.
    pub fn new(name: &str, description: &str, host: &banger_proto::HostId) -> Self {
        let mut metadata = HashMap::new();
        metadata.insert(
            banger_proto::service::META_HOST.to_owned(),
            host.to_string(),
        );
        metadata.insert(
            banger_proto::service::META_CONTRACT.to_owned(),
            banger_proto::CONTRACT_VERSION.to_owned(),
        );
        Self {
            name: name.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: description.to_owned(),
            metadata,
        }
    }

    /// Adds a metadata entry.
    pub fn with_meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }
}

#[derive(Debug, Default, Clone)]
struct ErrorCount {
    errors: u64,
    last_error: Option<String>,
}

type ErrorCounts = Arc<Mutex<HashMap<String, ErrorCount>>>;

/// A running service: its registration, endpoints and in-flight handlers.
pub struct ServiceHost {
    bus: Bus,
    name: String,
    service: async_nats::service::Service,
    tasks: TaskTracker,
    stop_endpoints: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    errors: ErrorCounts,
    served: Vec<&'static str>,
}

impl ServiceHost {
    /// Registers the service with the NATS service API.
    pub async fn start(bus: &Bus, spec: ServiceSpec) -> Result<Self, BusError> {
        let errors: ErrorCounts = Arc::default();
        let stats_errors = errors.clone();
        let started_ms = crate::now_ms();
        let service = bus
            .client()
            .service_builder()
            .description(&spec.description)
            .metadata(spec.metadata.clone())
            .stats_handler(move |endpoint, _stats| {
                let counts = stats_errors
                    .lock()
                    .map(|m| m.get(&endpoint).cloned().unwrap_or_default())
                    .unwrap_or_default();
                // `now_ms` lets `banger doctor` measure clock skew between hosts.
                serde_json::json!({
                    "errors": counts.errors,
                    "last_error": counts.last_error,
                    "now_ms": crate::now_ms(),
                    "started_ms": started_ms,
                })
            })
            .start(&spec.name, &spec.version)
            .await
            .map_err(|e| BusError::Register {
                name: spec.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            bus: bus.clone(),
            name: spec.name,
            service,
            tasks: TaskTracker::new(),
            stop_endpoints: CancellationToken::new(),
            loops: Vec::new(),
            errors,
            served: Vec::new(),
        })
    }

    /// The bus this service is on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Serves operation `op` at `at` (the lab, or this service's host): each request is decoded
    /// as `O::Request` and answered with what `handler(state.clone(), request)` returns, an
    /// `O::Reply` or an [`ApiError`]. The endpoint is named `O::ENDPOINT` in the NATS service
    /// API; [`Delivery::Queue`] operations share a queue group (one instance answers),
    /// [`Delivery::Broadcast`] ones get one per instance (every instance answers). This is the
    /// only way to add an endpoint.
    pub async fn serve<O, S, H, Fut>(
        &mut self,
        _op: O,
        at: &O::At,
        state: S,
        handler: H,
    ) -> Result<(), BusError>
    where
        O: Operation,
        S: Clone + Send + Sync + 'static,
        H: Fn(S, O::Request) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<O::Reply, ApiError>> + Send + 'static,
    {
        let subject = O::subject(self.bus.subjects(), at);
        let group = match O::DELIVERY {
            Delivery::Queue => None,
            Delivery::Broadcast => Some(format!("{}-{}", self.name, self.service.info().await.id)),
        };
        let handler = move |req: O::Request| handler(state.clone(), req);
        self.add_endpoint(O::ENDPOINT, subject, group, handler)
            .await?;
        self.served.push(O::ENDPOINT);
        Ok(())
    }

    /// Fails with [`BusError::Unserved`] unless every operation of `ops` (a service's
    /// `banger_proto::op::<service>::ALL`) has been [`serve`](Self::serve)d: called at the end
    /// of a service's registration, so a forgotten line fails at start-up, not at the first
    /// caller's `no responders`.
    pub fn check_serves(&self, ops: &[OpInfo]) -> Result<(), BusError> {
        let missing: Vec<&str> = ops
            .iter()
            .filter(|op| !self.served.contains(&op.endpoint))
            .map(|op| op.name)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(BusError::Unserved {
                service: self.name.clone(),
                missing: missing.join(", "),
            })
        }
    }

    async fn add_endpoint<Req, Resp, H, Fut>(
        &mut self,
        name: &str,
        subject: String,
        queue_group: Option<String>,
        handler: H,
    ) -> Result<(), BusError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        let mut builder = self.service.endpoint_builder().name(name);
        if let Some(group) = queue_group {
            builder = builder.queue_group(group);
        }
        let mut endpoint = builder
            .add(subject.clone())
            .await
            .map_err(|e| BusError::Register {
                name: format!("{}/{name}", self.name),
                message: e.to_string(),
            })?;
        let tasks = self.tasks.clone();
        let stop = self.stop_endpoints.clone();
        let service = self.name.clone();
        let op = name.to_owned();
        let errors = self.errors.clone();
        let loop_task = tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    () = stop.cancelled() => break,
                    r = endpoint.next() => match r {
                        Some(r) => r,
                        None => return,
                    },
                };
                let ctx = HandlerCtx {
                    service: service.clone(),
                    op: op.clone(),
                    subject: subject.clone(),
                    errors: errors.clone(),
                };
                tasks.spawn(handle(ctx, request, handler.clone()));
            }
            // Unsubscribe so no new requests arrive; requests already delivered are answered.
            match tokio::time::timeout(BUS_STEP_TIMEOUT, endpoint.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, endpoint = %op, "unsubscribing failed"),
                Err(_) => tracing::warn!(endpoint = %op, "unsubscribing timed out"),
            }
            while let Ok(Some(request)) =
                tokio::time::timeout(Duration::from_millis(50), endpoint.next()).await
            {
                let ctx = HandlerCtx {
                    service: service.clone(),
                    op: op.clone(),
                    subject: subject.clone(),
                    errors: errors.clone(),
                };
                tasks.spawn(handle(ctx, request, handler.clone()));
            }
        });
        self.loops.push(loop_task);
        Ok(())
    }

    /// Spawns a background task owned by this service: it is awaited on shutdown, so it must
    /// watch `shutdown` and return when it is cancelled.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Serves until `shutdown` is cancelled, then drains: endpoints unsubscribe, in-flight
    /// handlers and owned tasks finish (up to [`DRAIN_TIMEOUT`]), the service deregisters and
    /// pending publishes are flushed.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(service = %self.name, "serving");
        shutdown.cancelled().await;
        tracing::info!(service = %self.name, "draining");
        self.stop_endpoints.cancel();
        for l in self.loops.drain(..) {
            if let Err(e) = l.await {
                tracing::warn!(error = %e, "endpoint loop ended abnormally");
            }
        }
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.name, "in-flight work did not finish in time");
        }
        match tokio::time::timeout(BUS_STEP_TIMEOUT, self.service.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "deregistering from the service API"),
            Err(_) => tracing::warn!("deregistering from the service API timed out"),
        }
        if tokio::time::timeout(BUS_STEP_TIMEOUT, self.bus.client().flush())
            .await
            .is_err()
        {
            tracing::warn!("flushing pending messages timed out (is NATS down?)");
        }
        tracing::info!(service = %self.name, "stopped");
    }
}

struct HandlerCtx {
    service: String,
    op: String,
    subject: String,
    errors: ErrorCounts,
}

async fn handle<Req, Resp, H, Fut>(
    ctx: HandlerCtx,
    request: async_nats::service::Request,
    handler: H,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Resp, ApiError>>,
{
    let span = tracing::info_span!(
        "handle",
        otel.name = %format!("process {}", ctx.subject),
        otel.kind = "server",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %ctx.subject,
        banger.service = %ctx.service,
        banger.op = %ctx.op,
        trace_id = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    propagation::continue_trace(&span, request.message.headers.as_ref());
    let result = async {
        let req: Req = serde_json::from_slice(&request.message.payload)
            .map_err(|e| ApiError::invalid(format!("malformed {} request: {e}", ctx.op)))?;
        handler(req).await
    }
    .instrument(span.clone())
    .await;

    let mut headers = HeaderMap::new();
    propagation::inject(&span, &mut headers);
    let body = match result {
        Ok(resp) => match serde_json::to_vec(&resp) {
            Ok(b) => Ok(b),
            Err(e) => Err(ApiError::internal(format!(
                "encoding the {} reply: {e}",
                ctx.op
            ))),
        },
        Err(e) => Err(e),
    };
    let payload = match body {
        Ok(b) => b,
        Err(err) => {
            span.record("error.type", err.code.as_str());
            span.in_scope(|| {
                // What the caller asked could not be done as things are (not there, not yet,
                // wrong state): the caller reports it, and a poll (`vm create --wait` asks for
                // health every 500 ms while a guest boots) must not fill the log. A failure on
                // this side is for the operator.
                if matches!(
                    err.code,
                    ErrorCode::NotFound
                        | ErrorCode::Ambiguous
                        | ErrorCode::InvalidArgument
                        | ErrorCode::Conflict
                        | ErrorCode::Unavailable
                ) {
                    tracing::debug!(code = %err.code, "{}", err.message);
                } else {
                    tracing::info!(code = %err.code, "{}", err.message);
                }
            });
            if let Ok(mut m) = ctx.errors.lock() {
                let c = m.entry(ctx.op.clone()).or_default();
                c.errors += 1;
                c.last_error = Some(err.to_string());
            }
            headers.insert(NATS_SERVICE_ERROR, sanitize_header(&err.message).as_str());
            headers.insert(
                NATS_SERVICE_ERROR_CODE,
                err.code.status().to_string().as_str(),
            );
            headers.insert(ERROR_CODE_HEADER, err.code.as_str());
            serde_json::to_vec(&ErrorReply { error: err }).unwrap_or_default()
        }
    };
    if let Err(e) = request
        .respond_with_headers(Ok(payload.into()), headers)
        .await
    {
        span.in_scope(|| tracing::warn!(error = %e, "sending the reply failed"));
    }
}

/// Header values cannot hold line breaks.
fn sanitize_header(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}
