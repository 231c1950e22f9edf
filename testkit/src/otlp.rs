//! An OTLP/HTTP trace receiver inside the test: point processes at it with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` and read back the spans they exported, decoded with the
//! OpenTelemetry protobuf types. Only `POST /v1/traces` with protobuf bodies is served, which
//! is what `opentelemetry-otlp`'s HTTP exporter sends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One exported span, flattened for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root span.
    pub parent_span_id: String,
    /// Span kind as the OTLP enum value (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Linked span ids, hex (trace id, span id).
    pub links: Vec<(String, String)>,
    /// String-valued attributes.
    pub attributes: Vec<(String, String)>,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

impl Span {
    /// The string value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// How long the span lasted (zero when its clock ran backwards).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OtlpReceiver {
    /// Starts a receiver on a random loopback port.
    ///
    /// # Panics
    /// When the listener cannot be bound (a broken test machine).
    #[allow(
        clippy::expect_used,
        reason = "a test fixture that cannot start fails the test"
    )]
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building the OTLP receiver's runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the OTLP receiver");
        let addr = listener.local_addr().expect("OTLP receiver address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&spans);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let store = Arc::clone(&store);
                        async move { Ok::<_, Infallible>(receive(req, &store).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A broken connection only loses what the exporter will retry.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Self {
            addr,
            spans,
            runtime: Some(runtime),
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Waits until `pred` holds for the spans received and returns them.
    ///
    /// # Panics
    /// On timeout, listing the spans that did arrive.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            assert!(
                std::time::Instant::now() < end,
                "timed out after {timeout:?} waiting for {what}; received spans:\n{}",
                spans
                    .iter()
                    .map(|s| format!(
                        "  {} {} trace={} parent={}",
                        s.service, s.name, s.trace_id, s.parent_span_id
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn receive(
    req: Request<hyper::body::Incoming>,
    store: &Mutex<Vec<Span>>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND);
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST);
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST);
    };
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| string_value(kv.value.as_ref()))
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    links: s
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    attributes: s
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            string_value(kv.value.as_ref()).map(|v| (kv.key.clone(), v))
                        })
                        .collect(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    match store.lock() {
        Ok(mut s) => s.extend(out),
        Err(poisoned) => poisoned.into_inner().extend(out),
    }
    reply(StatusCode::OK)
}

fn string_value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}
