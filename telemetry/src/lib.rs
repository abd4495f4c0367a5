//! What fedra's processes tell operators, set up once per process by each binary.
//!
//! - **Logs**: `tracing` events to stdout (stderr is for the one-line errors the binaries
//!   exit with), as text for people or as one JSON object per line
//!   for log shippers ([`LogFormat`]); `RUST_LOG` filters either.
//! - **Metrics**: the libraries record through the `metrics` facade (`counter!`,
//!   `histogram!`, `gauge!`); [`metrics`] installs the process's Prometheus recorder once
//!   and [`render`] gives the exposition text a `/metrics` endpoint serves ([`serve_metrics`]
//!   for processes without an HTTP server of their own). Names follow Prometheus
//!   conventions (`fedra_…_total`, `_seconds`, `_bytes`) and every label has a bounded set
//!   of values (outcomes, phases, reasons, regions), never run or client ids.
//! - **Traces** (cargo feature `otel`): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are
//!   exported over OTLP/gRPC as well.
//!
//! - **Stopping**: [`stop_signal`] resolves on Ctrl-C or SIGTERM.
//!
//! A process that never installs the recorder (a library test) records into the facade's
//! no-op recorder: instrumentation costs nothing there.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("unknown log format {0:?} (expected `text` or `json`)")]
    LogFormat(String),
    #[error("logging is already set up in this process")]
    AlreadyInitialised,
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[cfg(feature = "otel")]
    #[error("OpenTelemetry exporter: {0}")]
    Otel(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default on a terminal).
    #[default]
    Text,
    /// One JSON object per line with the event's fields and its span context (run, round,
    /// client), for Loki, Elasticsearch, Cloud Logging and the like.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::LogFormat(other.to_string())),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Sets up logging (and trace export with the `otel` feature) for the process named
/// `service`; `default_filter` applies when `RUST_LOG` is unset. Also installs the
/// Prometheus recorder, so that metrics are recorded from the start.
///
/// # Errors
/// Logging was set up before in this process; the trace exporter cannot be built.
pub fn init(service: &'static str, format: LogFormat, default_filter: &str) -> Result<TelemetryGuard, TelemetryError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.to_string().into());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stdout).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed(),
    };
    #[cfg(feature = "otel")]
    let (otel, provider) = otel::layer(service)?;
    #[cfg(not(feature = "otel"))]
    let otel: Option<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>> = {
        let _ = service;
        None
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    metrics();
    Ok(TelemetryGuard {
        #[cfg(feature = "otel")]
        provider,
    })
}

use tracing_subscriber::Layer as _;

/// Histogram buckets for durations: 1 ms to 30 min, roughly ×2.5 apart (rounds of a
/// quickstart take tens of ms, rounds of a 1 GB model minutes).
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// How often histogram samples are folded into their buckets when nobody scrapes (bounds
/// the recorder's memory).
const UPKEEP: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use. If another recorder was
/// installed first (a test harness's), this one still renders, empty.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the duration buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only when a recorder is installed already; this handle then renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}

/// The Prometheus text exposition of every metric recorded in this process.
pub fn render() -> String {
    metrics().render()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An axum handler for `GET /metrics`.
pub async fn metrics_handler() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render())
}

/// Whether a process is ready to serve, as `/readyz` reports it: `Err` names why not.
pub type ReadyCheck = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves `GET /metrics` on `addr` until `shutdown` resolves (for a process that has no HTTP
/// server of its own: the sidecar, the inference node). Returns the bound address (port 0
/// picks one) and the server's task. See [`serve_ops`].
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), TelemetryError> {
    serve_ops(addr, None, shutdown).await
}

/// The ops port: `GET /metrics` (Prometheus text), `GET /healthz` (200 while the process
/// runs) and `GET /readyz` (200 when `ready` says so or there is no check, else 503 with the
/// reason), in plain HTTP without authentication, for Prometheus and Kubernetes probes
/// (which cannot present client certificates). Nothing here is per run or per client.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_ops(
    addr: SocketAddr,
    ready: Option<ReadyCheck>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), TelemetryError> {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    metrics();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| TelemetryError::Bind { addr, source })?;
    let readyz = move || {
        let ready = ready.clone();
        async move {
            match ready.map_or(Ok(()), |r| r()) {
                Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "the ops HTTP server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok((bound, task))
}

/// Installs the Ctrl-C and SIGTERM handlers now and returns a future that resolves on
/// either, so that every binary stops the same graceful way. Installed when called, not when
/// first awaited: a signal that arrives in between (during start-up) is kept rather than
/// killing the process with the default action. Call it from within the tokio runtime.
pub fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
        async move {
            match handlers {
                Ok((mut term, mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot handle SIGTERM; stopping on Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("stop signal received");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop signal received");
    }
}

/// CPU seconds the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`); differences of two
/// readings on one thread attribute the CPU work between them (cost attribution).
#[must_use]
pub fn thread_cpu_seconds() -> f64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU seconds the whole process has used, all threads (`CLOCK_PROCESS_CPUTIME_ID`).
#[must_use]
pub fn process_cpu_seconds() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids are constants this platform defines.
    let rc = unsafe { libc::clock_gettime(clock, &raw mut ts) };
    if rc == 0 { ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9 } else { 0.0 }
}

#[cfg(feature = "otel")]
mod otel {
    use super::TelemetryError;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer;

    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

    /// The OTLP layer when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads that and
    /// the other standard `OTEL_*` variables itself), otherwise nothing.
    pub(super) fn layer(
        service: &'static str,
    ) -> Result<(Option<Boxed>, Option<opentelemetry_sdk::trace::SdkTracerProvider>), TelemetryError> {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return Ok((None, None));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Otel(e.to_string()))?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).boxed();
        Ok((Some(layer), Some(provider)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse_and_name_a_bad_one() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let e = "yaml".parse::<LogFormat>().unwrap_err().to_string();
        assert!(e.contains("yaml") && e.contains("json"), "{e}");
    }

    #[test]
    fn recorded_metrics_render_in_the_exposition_format() {
        metrics();
        metrics::counter!("fedra_test_events_total", "outcome" => "ok").increment(3);
        metrics::histogram!("fedra_test_wait_seconds").record(0.02);
        let text = render();
        assert!(text.contains("fedra_test_events_total{outcome=\"ok\"} 3"), "{text}");
        // Durations are histograms with buckets, not summaries.
        assert!(text.contains("fedra_test_wait_seconds_bucket{le=\"0.025\"} 1"), "{text}");
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let before = thread_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_seconds() > before);
        assert!(process_cpu_seconds() >= thread_cpu_seconds());
    }

    #[tokio::test]
    async fn serve_metrics_answers_on_the_bound_port() {
        metrics();
        metrics::counter!("fedra_test_served_total").increment(1);
        let (addr, task) = serve_metrics("127.0.0.1:0".parse().unwrap(), std::future::pending()).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("text/plain; version=0.0.4"), "{body}");
        assert!(body.contains("fedra_test_served_total 1"), "{body}");
        task.abort();
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body
    }

    #[tokio::test]
    async fn readyz_follows_the_check_and_healthz_always_answers() {
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&ready);
        let check: ReadyCheck = std::sync::Arc::new(move || {
            if flag.load(std::sync::atomic::Ordering::SeqCst) { Ok(()) } else { Err("standing by".into()) }
        });
        let (addr, task) =
            serve_ops("127.0.0.1:0".parse().unwrap(), Some(check), std::future::pending()).await.unwrap();
        let not_yet = get(addr, "/readyz").await;
        assert!(not_yet.starts_with("HTTP/1.1 503") && not_yet.contains("standing by"), "{not_yet}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        task.abort();
    }
}
