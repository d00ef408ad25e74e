//! One client request is one OpenTelemetry trace: the gateway's request span and the `grpc.server`
//! spans of the meta and blob calls it makes share a trace id, each server span's parent is a
//! span of that trace, and a client's own `traceparent` becomes the gateway span's parent.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cluster_api::ReplicationPolicy;
use common::{random_bytes, Registry};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use test_cluster::{wait_until, InProcessCluster};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const REPO: &str = "tracing/blob";
/// A client's own trace context (W3C example ids), sent on the last request.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| match &attribute.value {
            Value::String(text) => text.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// The gateway's span of the one request with this method.
fn request_span<'a>(spans: &'a [SpanData], method: &str) -> &'a SpanData {
    let mut matching = spans.iter().filter(|span| {
        span.name == "request" && attribute(span, "method").as_deref() == Some(method)
    });
    let span = matching
        .next()
        .unwrap_or_else(|| panic!("no gateway span for {method}"));
    assert!(matching.next().is_none(), "one {method} request, one span");
    span
}

/// The gRPC methods served in `trace`; panics unless every server span's parent is a span of
/// that trace (the gateway's request span or a server span that called onwards).
fn grpc_methods_in(spans: &[SpanData], trace: TraceId) -> HashSet<String> {
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|span| span.span_context.trace_id() == trace)
        .collect();
    let ids: HashSet<SpanId> = in_trace
        .iter()
        .map(|span| span.span_context.span_id())
        .collect();
    in_trace
        .iter()
        .filter(|span| span.name == "grpc.server")
        .map(|span| {
            let method = attribute(span, "rpc.method").expect("grpc.server spans name the method");
            assert!(
                ids.contains(&span.parent_span_id),
                "{method}: parent {} is not in the gateway's trace",
                span.parent_span_id
            );
            method
        })
        .collect()
}

fn assert_served(methods: &HashSet<String>, expected: &[&str], request: &str) {
    for method in expected {
        assert!(
            methods.contains(*method),
            "{request}: {method} is not in the request's trace; found {methods:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_request_is_one_trace_across_gateway_meta_and_blob() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("wharf-test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    wharf::telemetry::install_propagator();

    // Separate roles, so the gateway's calls cross gRPC (under `serve` they are in-process).
    let cluster = InProcessCluster::start(1, 1, 1, ReplicationPolicy::default())
        .await
        .expect("the roles start");
    let base_url = cluster.gateway_url(1);
    let registry = Registry::new(base_url.clone());
    let data = random_bytes(256 * 1024);
    let digest = registry
        .push_blob_monolithic(REPO, &data)
        .await
        .expect("monolithic push");
    let url = format!("{base_url}/v2/{REPO}/blobs/{digest}");
    let pulled = registry
        .http
        .get(&url)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("GET body");
    assert_eq!(pulled.as_ref(), data.as_slice(), "the blob reads back");
    let head = registry
        .http
        .head(&url)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .expect("HEAD");
    assert!(head.status().is_success(), "HEAD: {}", head.status());

    // Server spans end when their handler returns, which can be just after the client has its
    // answer: wait until every span the assertions look at has ended, whatever its trace.
    let finished = || {
        let exporter = exporter.clone();
        async move {
            let spans = exporter.get_finished_spans().unwrap_or_default();
            let served = |method: &str| {
                spans
                    .iter()
                    .filter(|span| attribute(span, "rpc.method").as_deref() == Some(method))
                    .count()
            };
            let requests = spans.iter().filter(|span| span.name == "request").count();
            requests >= 3
                && served("/wharf.v1.Meta/CommitBlob") >= 1
                && served("/wharf.v1.Meta/StatBlob") >= 2
                && served("/wharf.v1.Blob/Read") >= 1
        }
    };
    wait_until(
        "the spans of all three requests",
        Duration::from_secs(10),
        finished,
    )
    .await
    .expect("spans exported");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("finished spans");

    let push = request_span(&spans, "POST");
    let push_trace = push.span_context.trace_id();
    let push_methods = grpc_methods_in(&spans, push_trace);
    assert_served(
        &push_methods,
        &[
            "/wharf.v1.Meta/CreateUpload",
            "/wharf.v1.Blob/StartUpload",
            "/wharf.v1.Blob/AppendAndCommit",
            "/wharf.v1.Meta/CommitBlob",
        ],
        "POST",
    );
    let commit_blob = spans
        .iter()
        .find(|span| attribute(span, "rpc.method").as_deref() == Some("/wharf.v1.Meta/CommitBlob"))
        .expect("a CommitBlob span");
    assert_eq!(
        commit_blob.parent_span_id,
        push.span_context.span_id(),
        "the gateway's call is the meta server span's parent"
    );

    let pull = request_span(&spans, "GET");
    let pull_trace = pull.span_context.trace_id();
    assert_ne!(
        pull_trace, push_trace,
        "each client request is its own trace"
    );
    assert_served(
        &grpc_methods_in(&spans, pull_trace),
        &["/wharf.v1.Meta/StatBlob", "/wharf.v1.Blob/Read"],
        "GET",
    );

    let head = request_span(&spans, "HEAD");
    assert_eq!(head.span_context.trace_id().to_string(), CLIENT_TRACE);
    assert_eq!(head.parent_span_id.to_string(), CLIENT_SPAN);
    assert_served(
        &grpc_methods_in(&spans, head.span_context.trace_id()),
        &["/wharf.v1.Meta/StatBlob"],
        "HEAD with traceparent",
    );
    cluster.shutdown().await;
}
