//! Logs and traces: structured logs through `tracing-subscriber` (human-readable on a terminal,
//! JSON otherwise), and OpenTelemetry traces exported over OTLP/gRPC when an endpoint is
//! configured. Neither ever slows a call: log lines and spans go through bounded queues, written
//! or exported off the call path, and are dropped (and counted) when their queue is full. Log
//! lines are not the audit trail: the audit writer never drops a record.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::call::{Call, CallFuture, Operation};
use crate::config::{LogFormat, TelemetryConfig};
use crate::errors::GatewayError;
use crate::middleware::Middleware;

/// Spans waiting for export; beyond this they are dropped and counted. Five spans a call at a few
/// thousand calls a second: room for a second or two of a slow export, a few MB at most.
const SPAN_QUEUE: usize = 16_384;
/// Spans per export request: large batches keep the per-request cost of the export (and of the
/// collector) off each span; 2048 spans are well inside a collector's 4 MiB message limit.
const EXPORT_BATCH: usize = 2048;
/// How long a partial batch waits before it is sent.
const EXPORT_DELAY: Duration = Duration::from_millis(500);
/// How long one export may take before it is abandoned (its spans counted as dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Export requests in flight at once: one slow request must not hold up the others.
const EXPORTS_IN_FLIGHT: usize = 4;
/// Log lines waiting for stderr; beyond this they are dropped and counted (a few MB of lines).
const LOG_QUEUE: usize = 16_384;

/// Keeps the log writer and the trace pipeline alive; [`Telemetry::shutdown`] flushes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    dropped: Arc<AtomicU64>,
    /// Dropped, it writes out the log lines still queued.
    log_writer: Option<WorkerGuard>,
    dropped_log_lines: DroppedLogLines,
}

/// Counts the log lines dropped because the log writer's queue was full.
#[derive(Clone, Debug, Default)]
pub struct DroppedLogLines(Option<ErrorCounter>);

impl DroppedLogLines {
    /// Lines dropped so far.
    pub fn get(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
    }
}

impl Telemetry {
    /// Spans dropped so far (queue full, or export failed or timed out).
    pub fn dropped_spans(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Log lines dropped so far (the writer's queue was full).
    pub fn dropped_log_lines(&self) -> DroppedLogLines {
        self.dropped_log_lines.clone()
    }

    /// Flushes the spans still queued, within `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        if let Some(provider) = self.provider {
            let flushed =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
            if !matches!(
                tokio::time::timeout(timeout + Duration::from_secs(1), flushed).await,
                Ok(Ok(Ok(())))
            ) {
                tracing::warn!("trace export did not flush within the grace period");
            }
        }
        drop(self.log_writer);
    }
}

/// The OTLP endpoint: the config's, else the standard environment variables'.
fn otlp_endpoint(config: &TelemetryConfig) -> Option<String> {
    config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

/// Installs the global subscriber (logs to stderr; stdout carries ready lines and mirrored audit
/// records) and, when an OTLP endpoint is configured, the trace pipeline. Must run inside the
/// tokio runtime. Installing twice keeps the first subscriber.
pub fn init(config: &TelemetryConfig) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Log lines are written to stderr by a thread of their own, so that a slow or full stderr
    // (a pipe nobody reads fast enough) never holds up a tokio worker. Past LOG_QUEUE lines
    // waiting, new ones are dropped and counted: lossy is acceptable for logs, which are not
    // the audit trail.
    let (stderr, log_writer) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let dropped_log_lines = DroppedLogLines(Some(stderr.error_counter()));

    let dropped = Arc::new(AtomicU64::new(0));
    let mut telemetry = Telemetry {
        provider: None,
        dropped: dropped.clone(),
        log_writer: Some(log_writer),
        dropped_log_lines,
    };
    let traces = otlp_endpoint(config).and_then(|endpoint| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build();
        let mut exporter = match exporter {
            Ok(exporter) => exporter,
            Err(err) => {
                eprintln!(
                    "warning: traces disabled: cannot build the OTLP exporter for {endpoint}: {err}"
                );
                return None;
            }
        };
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(config.service_name.clone());
        }
        let resource = resource.build();
        // The provider hands its resource to processors, not exporters; this processor owns its
        // exporter inside a task, so the exporter is told here (else spans go out with no
        // service.name).
        exporter.set_resource(&resource);
        // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (parent-based
        // always-on by default), read by the SDK.
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::start(exporter, dropped.clone()))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("datashare-gateway");
        telemetry.provider = Some(provider);
        // No source location, thread or busy/idle-time attributes: seven per span that a trace
        // does not need (its spans carry their own timing), each costing an allocation on the
        // call path and bytes on the wire.
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(filter_fn(exported)),
        )
    });
    let _ = match traces {
        // Without traces the level filter is global: a callsite below it (the SDK's many debug
        // events) is never enabled, and costs one comparison with the maximum level.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(json, stderr))
            .try_init(),
        // With traces it filters the logs only: the trace takes the SDK's per-attempt span,
        // which is at debug level.
        Some(traces) => tracing_subscriber::registry()
            .with(log_layer(json, stderr).with_filter(filter))
            .with(traces)
            .try_init()
            .inspect(|()| STAGE_SPANS.store(true, Ordering::Relaxed)),
    };
    telemetry
}

/// Whether [`StageSpan`] makes spans: only once a trace exporter is installed. Log lines carry
/// no span fields, so without traces a stage span would only cost.
static STAGE_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The log lines' layer: JSON with the call's ids, or text, written to `writer`.
fn log_layer<S>(json: bool, writer: NonBlocking) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if json {
        // A line names its call by `request_id` and `trace_id` (from `CallIdsLayer`), not by
        // the span's fields: the JSON formatter would re-serialise a span's fields at each
        // `record` and parse them again for each line, on every call.
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        tracing_subscriber::fmt::layer()
            .json()
            .fmt_fields(NoSpanFields)
            .event_format(WithCallIds(format))
            .with_writer(writer)
            .and_then(
                CallIdsLayer.with_filter(
                    filter_fn(|meta| {
                        meta.is_span() && meta.target().starts_with("datashare_gateway")
                    })
                    // The call spans are at info: without the hint no level could be ruled out
                    // before asking every filter.
                    .with_max_level_hint(tracing::Level::INFO),
                ),
            )
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    }
}

/// What becomes part of a trace: the gateway's spans at info and above, its events at warn and
/// above (the access line at info only repeats the RPC span's own attributes, and as a span
/// event it would be built, queued and encoded again for every call), and of the SDK only its
/// per-attempt span (debug level in aws-smithy-runtime). Its other internal spans
/// and debug events would multiply the spans per call and carry its configuration (the
/// credential's key id among it); with them filtered out, each attempt is a child of the
/// gateway's Redshift span.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    if target == "datashare_gateway" || target.starts_with("datashare_gateway::") {
        let floor = if meta.is_span() {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        };
        *meta.level() <= floor
    } else {
        meta.is_span()
            && meta.name() == "try_attempt"
            && target == "aws_smithy_runtime::client::orchestrator"
    }
}

/// Installs logging only (for commands that export no traces).
pub fn init_logging(config: &TelemetryConfig) {
    let config = TelemetryConfig {
        otlp_endpoint: None,
        ..config.clone()
    };
    // No endpoint in this copy, but the environment may name one: logs only, whatever it says.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The request id and trace id of the call a span belongs to, kept in the span's extensions by
/// [`CallIdsLayer`] from the span's `request_id` and `trace_id` fields.
#[derive(Clone, Debug, Default)]
struct CallIds {
    request_id: Option<String>,
    trace_id: Option<String>,
}

impl Visit for CallIds {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "request_id" => self.request_id = Some(value.to_owned()),
            "trace_id" => self.trace_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` fields arrive here, printing their Display.
        match field.name() {
            "request_id" => self.request_id = Some(format!("{value:?}")),
            "trace_id" => self.trace_id = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// Remembers each call span's request id and trace id (the trace id is recorded after the span
/// is made) so that [`WithCallIds`] can put them on every log line of the call.
#[derive(Clone, Copy, Debug)]
struct CallIdsLayer;

impl<S> Layer<S> for CallIdsLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut ids = CallIds::default();
        attrs.record(&mut ids);
        if (ids.request_id.is_some() || ids.trace_id.is_some())
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(ids) = span.extensions_mut().get_mut::<CallIds>()
        {
            values.record(ids);
        }
    }
}

/// Which of the call id fields an event carries itself.
#[derive(Debug, Default)]
struct OwnFields {
    request_id: bool,
    trace_id: bool,
}

impl Visit for OwnFields {
    fn record_debug(&mut self, field: &Field, _value: &dyn std::fmt::Debug) {
        match field.name() {
            "request_id" => self.request_id = true,
            "trace_id" => self.trace_id = true,
            _ => {}
        }
    }
}

/// Keeps no span fields for the log lines (see [`log_layer`]); event fields are written by the
/// JSON event format itself.
#[derive(Debug)]
struct NoSpanFields;

impl<'w> FormatFields<'w> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'w>,
        _fields: R,
    ) -> std::fmt::Result {
        Ok(())
    }

    fn add_fields(
        &self,
        _current: &'w mut tracing_subscriber::fmt::FormattedFields<Self>,
        _fields: &Record<'_>,
    ) -> std::fmt::Result {
        Ok(())
    }
}

/// The JSON event format, with the enclosing call's `request_id` and `trace_id` as top-level
/// fields of every line logged inside a call, so log pipelines can join a call's lines (and its
/// trace) without digging into span objects.
#[derive(Debug)]
struct WithCallIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithCallIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<CallIds>().cloned())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut own = OwnFields::default();
        event.record(&mut own);
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        writer.write_char('{')?;
        for (key, value, own) in [
            ("request_id", &ids.request_id, own.request_id),
            ("trace_id", &ids.trace_id, own.trace_id),
        ] {
            if let (Some(value), false) = (value, own) {
                // Serializing a string cannot fail.
                let value = serde_json::to_string(value).unwrap_or_default();
                write!(writer, "\"{key}\":{value},")?;
            }
        }
        writer.write_str(rest)
    }
}

/// Reads W3C trace context from gRPC metadata.
struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The caller's trace context (`traceparent`, `tracestate`), if it sent one.
pub fn extract_parent(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&MetadataExtractor(metadata))
}

/// The trace id of a context, as 32 hex digits, when it has a valid span context.
pub fn trace_id_of(cx: &opentelemetry::Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// A batch span processor with a bounded queue that counts what it drops. (The SDK's own batch
/// processor drops silently apart from a log line at shutdown.)
#[derive(Debug)]
struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
    dropped: Arc<AtomicU64>,
}

impl QueueProcessor {
    fn start<E: SpanExporter + 'static>(exporter: E, dropped: Arc<AtomicU64>) -> Self {
        let (spans, mut queue) = mpsc::channel::<SpanData>(SPAN_QUEUE);
        let (control, mut flushes) = mpsc::unbounded_channel::<std::sync::mpsc::Sender<()>>();
        let counter = dropped.clone();
        let exporter = Arc::new(exporter);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(EXPORTS_IN_FLIGHT));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(EXPORT_BATCH);
            // When the oldest span of a partial batch is due: counted from its arrival, so a
            // steady trickle of spans cannot keep postponing the export.
            let mut due = None;
            loop {
                let mut flush = None;
                tokio::select! {
                    span = queue.recv() => match span {
                        Some(span) => {
                            if batch.is_empty() {
                                due = Some(tokio::time::Instant::now() + EXPORT_DELAY);
                            }
                            batch.push(span);
                        }
                        None => flush = Some(None),
                    },
                    ack = flushes.recv() => flush = Some(ack),
                    () = sleep_until(due), if due.is_some() => flush = Some(None),
                }
                if flush.is_some() {
                    // Take everything already queued before answering a flush.
                    while let Ok(span) = queue.try_recv() {
                        batch.push(span);
                    }
                }
                if batch.len() >= EXPORT_BATCH || (flush.is_some() && !batch.is_empty()) {
                    for chunk in std::mem::take(&mut batch).chunks(EXPORT_BATCH) {
                        // The semaphore is never closed, so acquiring only waits for a slot.
                        let Ok(slot) = in_flight.clone().acquire_owned().await else {
                            break;
                        };
                        let (exporter, counter, chunk) =
                            (exporter.clone(), counter.clone(), chunk.to_vec());
                        tokio::spawn(async move {
                            let n = chunk.len() as u64;
                            let exported =
                                tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(chunk)).await;
                            if !matches!(exported, Ok(Ok(()))) {
                                counter.fetch_add(n, Ordering::Relaxed);
                            }
                            drop(slot);
                        });
                    }
                }
                if batch.is_empty() {
                    due = None;
                }
                if let Some(Some(ack)) = flush {
                    // A flush is answered once every export it started has finished.
                    let _all = in_flight.acquire_many(EXPORTS_IN_FLIGHT as u32).await;
                    let _ = ack.send(());
                }
                if queue.is_closed() && queue.is_empty() && batch.is_empty() {
                    break;
                }
            }
        });
        QueueProcessor {
            spans,
            control,
            dropped,
        }
    }
}

/// Sleeps until `due`; never resolves without one (the branch using it is disabled then).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (ack, done) = std::sync::mpsc::channel();
        if self.control.send(ack).is_ok() {
            let _ = done.recv_timeout(EXPORT_TIMEOUT + Duration::from_secs(1));
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let (ack, done) = std::sync::mpsc::channel();
        if self.control.send(ack).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the process can still be stopped; wait on Ctrl-C instead.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Wraps the next layer (and what it calls) in a span named for its stage, so a trace shows where
/// a call's time went: policy, audit intent, upstream. Passes calls straight on while no traces
/// are exported.
#[derive(Clone, Copy, Debug)]
pub struct StageSpan {
    name: &'static str,
}

impl StageSpan {
    /// A stage called `name`.
    pub fn new(name: &'static str) -> Self {
        StageSpan { name }
    }
}

impl<Op: Operation, Stage: Send + 'static> Middleware<Op, Stage> for StageSpan {
    type Out = Stage;

    fn handle<S, F>(&self, call: Call<Op, Stage>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: tower::Service<Call<Op, Stage>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        // Entered once, while the inner layers build their futures, so each stage's span nests
        // in the one before; not entered on every poll (as `instrument` would) because every
        // poll of the Redshift call below would then enter and leave all four stage spans. The
        // span stays open until the call ends, as before.
        if !STAGE_SPANS.load(Ordering::Relaxed) {
            return Box::pin(next.call(call));
        }
        let span = tracing::info_span!("stage", otel.name = self.name);
        let future = span.in_scope(|| next.call(call));
        Box::pin(async move {
            let result = future.await;
            drop(span);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use std::sync::Mutex;

    /// Records the size of each exported batch.
    #[derive(Clone, Debug, Default)]
    struct Recording(Arc<Mutex<Vec<usize>>>);

    impl SpanExporter for Recording {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch.len());
            Ok(())
        }
    }

    /// Never answers, like a black-holed collector.
    #[derive(Clone, Debug, Default)]
    struct Hanging;

    impl SpanExporter for Hanging {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spans_beyond_the_queue_and_spans_whose_export_hangs_are_all_counted_as_dropped() {
        let dropped = Arc::new(AtomicU64::new(0));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::start(Hanging, dropped.clone()))
            .build();
        let tracer = provider.tracer("test");
        // Ending a span never waits: the export task has not run yet, so the queue fills.
        let spans = SPAN_QUEUE + 904;
        for _ in 0..spans {
            tracer.start("call").end();
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 904);
        // Each batch's export times out in turn; every span ends up counted, none is lost
        // silently.
        tokio::time::sleep(EXPORT_TIMEOUT * (SPAN_QUEUE / EXPORT_BATCH + 2) as u32).await;
        assert_eq!(dropped.load(Ordering::Relaxed), spans as u64);
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_of_spans_is_exported_within_the_delay() {
        let exporter = Recording::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::start(exporter.clone(), dropped.clone()))
            .build();
        let tracer = provider.tracer("test");
        // A span every 400 ms: each arrives before the previous one's delay is over.
        for _ in 0..5 {
            tracer.start("call").end();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let exported: usize = exporter
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .sum();
        assert!(
            exported >= 3,
            "spans older than the delay were exported: {exported}"
        );
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        // Shutdown waits for the export task, which needs this thread: wait elsewhere.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}
