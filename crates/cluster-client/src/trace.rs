//! Trace context on outgoing calls: every request of [`crate::MetaClient`],
//! [`crate::AdminClient`] and [`crate::BlobClient`] carries the OpenTelemetry context of the
//! current `tracing` span in its gRPC metadata (W3C `traceparent` with the propagator the binary
//! installs), so the server's span joins the caller's trace.
//!
//! Cost per call without an OpenTelemetry layer: one span lookup that finds no context, then
//! nothing is written.

use opentelemetry::propagation::Injector;
use opentelemetry::trace::TraceContextExt;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A channel whose requests carry the caller's trace context.
pub type TracedChannel = InterceptedService<Channel, InjectTraceContext>;

/// `channel` with the caller's trace context added to every request.
pub fn traced(channel: Channel) -> TracedChannel {
    InterceptedService::new(channel, InjectTraceContext)
}

/// Writes the current span's trace context into each request's metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContext;

impl Interceptor for InjectTraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current_context(request.metadata_mut());
        Ok(request)
    }
}

/// Writes the current `tracing` span's OpenTelemetry context into `metadata`; writes nothing
/// when the span belongs to no trace.
pub fn inject_current_context(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Propagators write lowercase ASCII keys and values; anything else is dropped rather than
        // failing the call.
        let key = MetadataKey::from_bytes(key.as_bytes());
        let value = MetadataValue::try_from(value);
        if let (Ok(key), Ok(value)) = (key, value) {
            self.0.insert(key, value);
        }
    }
}
