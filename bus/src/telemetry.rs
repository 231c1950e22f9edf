//! Logs and traces.
//!
//! Logs go to stderr, human-readable or JSON, levelled by `RUST_LOG` (default `info`). Spans go
//! to OpenTelemetry: always into an in-process tracer (so trace context is generated and
//! propagated even when nothing is exported), and over OTLP/HTTP to
//! `OTEL_EXPORTER_OTLP_ENDPOINT` when that standard variable is set.
//!
//! The level filter sits on the log layer only. A global filter would disable spans below its
//! level for every layer, and the `traceparent` injected from a disabled span is empty — trace
//! propagation would silently stop at `RUST_LOG=warn`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people.
    #[default]
    Human,
    /// One JSON object per event for log shippers.
    Json,
}

/// Flushes and shuts the tracer down when dropped, so the last spans are exported.
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("warning: flushing traces failed: {e}");
        }
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: stopping the trace exporter failed: {e}");
        }
    }
}

/// The environment variable that turns OTLP export on.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the lines that say why a service starts and exits
/// ([`crate::shutdown::LIFECYCLE`]) at `info`, whatever level `RUST_LOG` chose — a service
/// stopped under `RUST_LOG=warn` must still say who stopped it — unless `rust_log` names that
/// target itself or is `off`.
fn with_lifecycle(filter: EnvFilter, rust_log: Option<&str>) -> EnvFilter {
    let lifecycle = crate::shutdown::LIFECYCLE;
    let silenced = rust_log.is_some_and(|v| v.trim() == "off" || v.contains(lifecycle));
    if silenced {
        return filter;
    }
    match format!("{lifecycle}=info").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Installs the global subscriber and propagator for process `service`.
pub fn init(service: &str, format: LogFormat) -> TelemetryGuard {
    init_with_default_level(service, format, "info")
}

/// Like [`init`], with the log level used when `RUST_LOG` is unset (the CLI prefers `warn`).
pub fn init_with_default_level(
    service: &str,
    format: LogFormat,
    default_level: &str,
) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let endpoint_set = std::env::var_os(OTLP_ENDPOINT_ENV).is_some_and(|v| !v.is_empty());
    if endpoint_set {
        // The blocking HTTP client runs on the batch processor's own thread, so export never
        // needs (or blocks) the tokio runtime.
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("warning: OTLP export disabled: {e}"),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service.to_owned());
    opentelemetry::global::set_tracer_provider(provider.clone());

    // async-nats reports every reconnect attempt at info; our connect module logs the state
    // changes an operator cares about, so the library is quieter by default.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},async_nats=warn")));
    let filter = with_lifecycle(filter, std::env::var("RUST_LOG").ok().as_deref());
    let fmt_layer = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only on a terminal: `banger up` sends each service's stderr to a file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);
    // A second init (tests that call `run` twice in one process) keeps the first subscriber.
    let _already_set = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    TelemetryGuard { provider }
}
