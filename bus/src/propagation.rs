//! W3C trace context (`traceparent`, `tracestate`) carried in NATS headers.
//!
//! Every message banger sends carries the current span's context; every handler continues it.
//! Requests make the handler's span a child of the caller's; events are linked instead (an event
//! handler runs on its own schedule, so it starts its own trace and points back to the one that
//! published the event).

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header name of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Header names come from the propagator (`traceparent`, `tracestate`), which are valid.
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes the context of `span` into `headers`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// Writes the current span's context into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current(), headers);
}

/// Reads a remote context from `headers` (an empty context when there is none).
pub fn extract(headers: Option<&HeaderMap>) -> opentelemetry::Context {
    match headers {
        Some(h) => {
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h)))
        }
        None => opentelemetry::Context::new(),
    }
}

/// Makes `span` a child of the context in `headers`, and records its trace id in the span's
/// `trace_id` field (if declared) so log lines carry it.
pub fn continue_trace(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let parent = extract(headers);
    if parent.span().span_context().is_valid()
        && let Err(e) = span.set_parent(parent)
    {
        tracing::debug!(error = %e, "could not set the remote parent of a span");
    }
    record_trace_id(span);
}

/// Links `span` to the context in `headers` without making it a child.
pub fn link_trace(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let remote = extract(headers);
    let sc = remote.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
    record_trace_id(span);
}

/// The trace id of `span` as 32 hex digits (all zeroes when tracing is off).
pub fn trace_id(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

fn record_trace_id(span: &tracing::Span) {
    span.record("trace_id", tracing::field::display(trace_id(span)));
}

/// The trace id in `headers`' `traceparent`, if any: what a service received.
pub fn trace_id_in(headers: Option<&HeaderMap>) -> Option<String> {
    let cx = extract(headers);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
