//! Logging (`tracing`), trace spans (OpenTelemetry) and Prometheus metrics for every role.
//!
//! One subscriber per process: log lines (fmt) and an OpenTelemetry layer that gives every span a
//! trace context, which `cluster_client` passes on in gRPC metadata and [`crate::trace`] adopts on
//! the other side, so one client request is one trace across gateway, meta and blob nodes. Spans
//! leave the process only when an OTLP endpoint is configured (a batch exporter on its own
//! thread); without one the provider has no processor, so nothing is buffered or sent, yet the
//! context still flows through this node.

use std::sync::OnceLock;

use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The standard variable naming an OTLP collector, honoured when no endpoint is configured.
const OTEL_ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP span exporter for {endpoint}: {reason}")]
pub struct TelemetryError {
    pub endpoint: String,
    pub reason: String,
}

/// The installed span pipeline; [`Telemetry::shutdown`] flushes it on exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Blocks until the collector
    /// answered or the exporter's timeout passed.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the span exporter did not shut down cleanly");
        }
    }
}

/// Installs logging (filter from `RUST_LOG`, else `default_filter`), trace context propagation
/// without export, and the Prometheus recorder. Safe to call more than once; later calls do
/// nothing.
pub fn init(default_filter: &str) {
    // Without an endpoint nothing can fail.
    let _ = init_for_role(default_filter, "wharf", None);
}

/// [`init`] for a role: spans carry `service.name = wharf-<role>` and are exported over
/// OTLP/gRPC to `otlp_endpoint` (else `OTEL_EXPORTER_OTLP_ENDPOINT`) when one is set.
pub fn init_for_role(
    default_filter: &str,
    role: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    install_propagator();
    let provider = tracer_provider(role, otlp_endpoint)?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("wharf"))
        .with_tracked_inactivity(false)
        .with_threads(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(spans)
        .try_init();
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was already installed");
        }
        spawn_upkeep(handle.clone());
        handle
    });
    Ok(Telemetry { provider })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the recorder's histogram samples into their buckets every few seconds. The recorder
/// keeps every sample recorded since the last upkeep or scrape: with nothing scraping `/metrics`
/// that grew by about 11 bytes per request for ever (found with heaptrack in the 200k
/// manifest-PUT run, benches/README.md).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("wharf-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep");
    }
}

/// Makes W3C TraceContext (`traceparent`, `tracestate`) the process's propagator, which the gRPC
/// clients and servers and the gateway use.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

fn tracer_provider(
    role: &str,
    otlp_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(format!("wharf-{role}"))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let endpoint = otlp_endpoint.map(str::to_owned).or_else(|| {
        std::env::var(OTEL_ENDPOINT_VARIABLE)
            .ok()
            .filter(|endpoint| !endpoint.is_empty())
    });
    let Some(endpoint) = endpoint else {
        return Ok(builder.build());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|error| TelemetryError {
            endpoint,
            reason: error.to_string(),
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render_metrics() -> String {
    PROMETHEUS
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Adds `GET /metrics` to a router.
pub fn with_metrics_route(router: axum::Router) -> axum::Router {
    router.route("/metrics", get(|| async { render_metrics() }))
}
