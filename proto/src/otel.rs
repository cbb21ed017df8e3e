//! The one OpenTelemetry setup of noco-server and noco-agent (feature `otel`): the process's
//! tracing subscriber (stderr, filtered by `NOCO_LOG`), and — each only when asked for — OTLP
//! export of traces, metrics and logs, and a Prometheus registry fed by the same instruments.
//!
//! Export never blocks the request path: spans and log records go through the SDK's batch
//! processors (their own threads, bounded queues), metrics through a periodic reader. An exporter
//! that fails is counted per signal ([`export_failures`], exported as
//! `noco.otlp.export.failures`) and logged once when it starts failing and once when it works
//! again — never fatal, never a log line per attempt.
//!
//! Trace context crosses process boundaries as a W3C `traceparent` string ([`traceparent`],
//! [`set_parent`]): the server puts it in each desired-state message, per stack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Stream};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The most distinct attribute sets one metric keeps (the SDK's default is 2,000, which 1,000
/// hosts × 10 containers passes at once; past the limit values fold into
/// `otel.metric.overflow="true"`). Per-container series are bounded by the hosts' containers;
/// see ARCHITECTURE.md "Telemetry export".
pub const METRIC_CARDINALITY_LIMIT: usize = 100_000;

/// How often metrics are pushed over OTLP when not told otherwise: a minute, the OpenTelemetry
/// SDKs' default (`OTEL_METRIC_EXPORT_INTERVAL`) and Prometheus's default scrape interval. Every
/// push carries every series (~110 per host), so at 1,000 hosts a push every 10 s costs the
/// server several times what one a minute does (ARCHITECTURE.md "Measured").
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);
/// [`DEFAULT_METRICS_INTERVAL`] as a flag's default value is written.
pub const DEFAULT_METRICS_INTERVAL_ARG: &str = "60s";

/// What `NOCO_LOG` defaults to. The SDK's own diagnostics are off unless asked for: an
/// unreachable collector is reported by [`export_failures`] and a line of ours, not a line per
/// attempt.
pub const DEFAULT_LOG_FILTER: &str =
    "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// The transport of OTLP export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/gRPC (a collector's port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318): POST `<endpoint>/v1/traces`, `/v1/metrics`,
    /// `/v1/logs`.
    Http,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            _ => Err(format!(
                "unknown OTLP protocol {s:?}: use grpc (port 4317) or http (OTLP/HTTP with protobuf, port 4318)"
            )),
        }
    }
}

/// Where and how to export over OTLP.
#[derive(Debug, Clone)]
pub struct Otlp {
    /// `http://collector:4317` or `https://…` (TLS with the web's public roots).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every export (`authorization=Bearer …`).
    pub headers: Vec<(String, String)>,
    /// How often metrics are pushed.
    pub metrics_interval: Duration,
    /// Push metrics (the agent's reach the server over its session instead).
    pub metrics: bool,
}

/// Parse `--otlp-header key=value`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("OTLP header {s:?}: expected key=value"))?;
    let k = k.trim().to_ascii_lowercase();
    if k.is_empty()
        || http::HeaderName::from_bytes(k.as_bytes()).is_err()
        || http::HeaderValue::from_str(v).is_err()
    {
        return Err(format!(
            "OTLP header {k:?}: not a valid header name and value"
        ));
    }
    Ok((k, v.to_string()))
}

/// `--otlp-header` and `--otlp-protocol`, the same in every program that exports over OTLP
/// (flattened beside that program's own `--otlp-endpoint`, which they require).
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// A header sent with every OTLP export, key=value (repeat for more), e.g.
    /// authorization=Bearer…
    #[arg(long = "otlp-header", value_parser = parse_header, requires = "otlp_endpoint")]
    pub otlp_headers: Vec<(String, String)>,
    /// The OTLP transport: grpc (a collector's port 4317) or http (OTLP/HTTP with protobuf
    /// bodies, port 4318: POST <endpoint>/v1/traces, /v1/metrics, /v1/logs).
    #[arg(long, default_value = "grpc", requires = "otlp_endpoint")]
    pub otlp_protocol: Protocol,
}

/// Check an OTLP endpoint before anything starts (`--otlp-endpoint`'s parser).
pub fn check_endpoint(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("OTLP endpoint {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(s.to_string()),
        _ => Err(format!(
            "OTLP endpoint {s:?}: expected http://host:port or https://host:port"
        )),
    }
}

/// What the process exports; built by [`init`].
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.tracer.is_some())
            .field("metrics", &self.meter.is_some())
            .field("logs", &self.logger.is_some())
            .finish()
    }
}

/// The signals export failures are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces = 0,
    Metrics = 1,
    Logs = 2,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

static FAILURES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static FAILING: [AtomicBool; 3] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

/// How many OTLP exports of a signal have failed since the process started.
pub fn export_failures(signal: Signal) -> u64 {
    FAILURES[signal as usize].load(Ordering::Relaxed)
}

/// Count an export's outcome; log the first failure of a run of failures, and the recovery.
/// (Exporters of ours outside the SDK report here too.)
pub fn note<E: std::fmt::Display>(signal: Signal, result: &Result<(), E>) {
    let i = signal as usize;
    match result {
        Ok(()) => {
            if FAILING[i].swap(false, Ordering::Relaxed) {
                tracing::info!(target: "noco::otel", "OTLP export of {} works again", signal.name());
            }
        }
        Err(e) => {
            FAILURES[i].fetch_add(1, Ordering::Relaxed);
            if !FAILING[i].swap(true, Ordering::Relaxed) {
                tracing::warn!(target: "noco::otel",
                    "OTLP export of {} failed: {e} (counted in noco.otlp.export.failures; logged again only once it works)",
                    signal.name()
                );
            }
        }
    }
}

/// An exporter whose outcomes are counted.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counted<E>
{
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> OTelSdkResult {
        let r = self.0.export(batch).await;
        note(Signal::Traces, &r);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for Counted<E> {
    async fn export(&self, batch: opentelemetry_sdk::logs::LogBatch<'_>) -> OTelSdkResult {
        let r = self.0.export(batch).await;
        note(Signal::Logs, &r);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for Counted<E>
{
    async fn export(
        &self,
        metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> OTelSdkResult {
        let r = self.0.export(metrics).await;
        note(Signal::Metrics, &r);
        r
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.0.temporality()
    }
}

/// What [`init`] sets up.
#[derive(Debug, Default)]
pub struct Setup {
    /// `service.name` of the resource (`noco-server`, `noco-agent`).
    pub service: &'static str,
    /// More resource attributes (`host.name`, `noco.host.id`).
    pub resource: Vec<(&'static str, String)>,
    pub otlp: Option<Otlp>,
    /// Serve the instruments to Prometheus through this registry (`--metrics-listen`).
    pub prometheus: Option<prometheus::Registry>,
}

fn tonic_builder<B: WithExportConfig + WithTonicConfig>(b: B, otlp: &Otlp) -> B {
    let mut meta = tonic::metadata::MetadataMap::new();
    for (k, v) in &otlp.headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            meta.insert(k, v);
        }
    }
    let b = b
        .with_endpoint(otlp.endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .with_metadata(meta);
    if otlp.endpoint.starts_with("https://") {
        b.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
    } else {
        b
    }
}

fn http_builder<B: WithExportConfig + WithHttpConfig>(b: B, otlp: &Otlp, signal: &str) -> B {
    b.with_endpoint(format!(
        "{}/v1/{signal}",
        otlp.endpoint.trim_end_matches('/')
    ))
    .with_timeout(Duration::from_secs(10))
    .with_headers(otlp.headers.iter().cloned().collect())
}

/// Build an exporter of the protocol asked for (the builders differ; the exporter is one type).
macro_rules! exporter {
    ($kind:ident, $otlp:expr, $signal:literal) => {
        match $otlp.protocol {
            Protocol::Grpc => {
                tonic_builder(opentelemetry_otlp::$kind::builder().with_tonic(), $otlp).build()
            }
            Protocol::Http => http_builder(
                opentelemetry_otlp::$kind::builder().with_http(),
                $otlp,
                $signal,
            )
            .build(),
        }
        .map_err(|e| format!("the OTLP {} exporter: {e}", $signal))
    };
}

/// Install the process's tracing subscriber and, as `setup` asks, OTLP export and the Prometheus
/// registry; sets the global meter provider (instruments made after this feed them) and the
/// W3C trace-context propagator. Call once, inside the Tokio runtime (the gRPC exporters'
/// connections live on it).
pub fn init(setup: Setup) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NOCO_LOG")
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let mut resource = Resource::builder().with_service_name(setup.service);
    for (k, v) in &setup.resource {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(*k, v.clone()));
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();

    let mut telemetry = Telemetry {
        tracer: None,
        meter: None,
        logger: None,
    };
    let mut meter = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
            Stream::builder()
                .with_cardinality_limit(METRIC_CARDINALITY_LIMIT)
                .build()
                .ok()
        });
    let mut metered = false;
    if let Some(registry) = setup.prometheus {
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry)
            .scope_info_enabled(false)
            .build()
            .map_err(|e| format!("the Prometheus exporter: {e}"))?;
        meter = meter.with_reader(reader);
        metered = true;
    }
    // Our own spans and events only: the HTTP/2 and gRPC machinery's events would otherwise
    // feed the log exporter's own requests back into it.
    let ours = || {
        tracing_subscriber::filter::Targets::new()
            .with_target("noco", tracing::Level::INFO)
            .with_target("noco_server", tracing::Level::INFO)
            .with_target("noco_agent", tracing::Level::INFO)
    };
    let mut trace_layer = None;
    let mut log_layer = None;
    if let Some(otlp) = &setup.otlp {
        let spans = exporter!(SpanExporter, otlp, "traces")?;
        let tracer = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(Counted(spans))
            .build();
        trace_layer = Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer.tracer(setup.service))
                .with_filter(ours()),
        );
        telemetry.tracer = Some(tracer);

        if otlp.metrics {
            let metrics = exporter!(MetricExporter, otlp, "metrics")?;
            meter = meter.with_reader(
                opentelemetry_sdk::metrics::PeriodicReader::builder(Counted(metrics))
                    .with_interval(otlp.metrics_interval)
                    .build(),
            );
            metered = true;
        }

        let logs = exporter!(LogExporter, otlp, "logs")?;
        let logger = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(Counted(logs))
            .build();
        // noco's own events as log records, beside its spans.
        log_layer = Some(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&logger)
                .with_filter(ours()),
        );
        telemetry.logger = Some(logger);
    }
    if metered {
        let provider = meter.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        telemetry.meter = Some(provider);
        register_failure_counter();
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(fmt)
        .with(trace_layer)
        .with(log_layer)
        .try_init()
        .map_err(|e| format!("installing the tracing subscriber: {e}"))?;
    Ok(telemetry)
}

/// Install only the stderr subscriber (commands that export nothing).
pub fn init_plain() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NOCO_LOG")
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .try_init();
}

fn register_failure_counter() {
    let meter = opentelemetry::global::meter("noco");
    let _ = meter
        .u64_observable_counter("noco.otlp.export.failures")
        .with_description("OTLP exports that failed, by signal")
        .with_unit("{export}")
        .with_callback(|o| {
            for s in Signal::ALL {
                o.observe(
                    export_failures(s),
                    &[opentelemetry::KeyValue::new("signal", s.name())],
                );
            }
        })
        .build();
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// Export what is queued and stop, waiting at most `timeout` (on the blocking pool: the
    /// SDK's shutdown blocks).
    pub async fn shutdown(self, timeout: Duration) {
        let work = on_a_thread(move || {
            if let Some(t) = &self.tracer {
                let _ = t.shutdown_with_timeout(timeout);
            }
            if let Some(m) = &self.meter {
                let _ = m.shutdown_with_timeout(timeout);
            }
            if let Some(l) = &self.logger {
                let _ = l.shutdown_with_timeout(timeout);
            }
        });
        let _ = work.join_timeout(timeout + Duration::from_secs(1));
    }
}

/// Work on a plain thread, joined with a bound (the SDK's shutdown blocks; no Tokio here).
struct Task(std::sync::mpsc::Receiver<()>);

fn on_a_thread(f: impl FnOnce() + Send + 'static) -> Task {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    Task(rx)
}

impl Task {
    fn join_timeout(self, timeout: Duration) -> Result<(), ()> {
        self.0.recv_timeout(timeout).map_err(|_| ())
    }
}

/// The W3C `traceparent` of a span (None when spans are not exported or the span is disabled).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Make `span` a child of the remote span a `traceparent` names (ignored when empty or bad).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_metrics_interval_reads_as_written() {
        assert_eq!(
            crate::duration::parse(DEFAULT_METRICS_INTERVAL_ARG),
            Ok(DEFAULT_METRICS_INTERVAL)
        );
    }

    #[test]
    fn headers_and_endpoints_are_checked() {
        assert_eq!(
            parse_header("Authorization=Bearer x"),
            Ok(("authorization".into(), "Bearer x".into()))
        );
        assert!(parse_header("nokey").is_err());
        assert!(parse_header("bad key=v").is_err());
        assert!(check_endpoint("http://collector:4317").is_ok());
        assert!(check_endpoint("https://otel.example.com").is_ok());
        assert!(check_endpoint("collector:4317").is_err());
        assert!(check_endpoint("ftp://x").is_err());
        assert_eq!("grpc".parse::<Protocol>(), Ok(Protocol::Grpc));
        assert_eq!("http".parse::<Protocol>(), Ok(Protocol::Http));
        assert!("carrier-pigeon".parse::<Protocol>().is_err());
    }
}
