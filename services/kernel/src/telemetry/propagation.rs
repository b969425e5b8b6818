//! W3C trace context (`traceparent`, `tracestate`) in HTTP/gRPC headers and Kafka headers.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Installs the W3C propagator globally; idempotent.
pub fn install() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

struct HeaderMapCarrier<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderMapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderMapReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderMapReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The trace context a request arrived with.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderMapReader(headers)))
}

/// Adds the current span's context to outgoing request headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderMapCarrier(headers))
    });
}

/// The current span's context as plain key/value pairs, e.g. to store with an outbox row and
/// send as Kafka headers later. Empty when no trace is active.
pub fn current_context_fields() -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut fields));
    fields
}

/// A context from key/value pairs such as Kafka headers.
pub fn extract_fields(fields: &HashMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(fields))
}

/// Makes `span` a child of `context`; a context without a valid span leaves it a root.
pub fn set_parent(span: &tracing::Span, context: Context) {
    // Fails only when the span is disabled, in which case there is nothing to link.
    let _ = span.set_parent(context);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    /// A trace continues across a Kafka hop: the fields stored with an outbox row make the
    /// consumer's span a child of the producer's trace.
    #[test]
    fn trace_context_survives_a_round_trip_through_headers() {
        install();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::info_span!("producer");
            let (fields, trace_id) = producer.in_scope(|| {
                let fields = current_context_fields();
                (fields, tracing::Span::current().context().span().span_context().trace_id())
            });
            assert!(
                fields.get("traceparent").is_some_and(|v| v.contains(&trace_id.to_string())),
                "{fields:?}"
            );

            let consumer = tracing::info_span!("consumer");
            set_parent(&consumer, extract_fields(&fields));
            assert_eq!(consumer.context().span().span_context().trace_id(), trace_id);

            let mut headers = http::HeaderMap::new();
            producer.in_scope(|| inject_http(&mut headers));
            assert_eq!(extract_http(&headers).span().span_context().trace_id(), trace_id);
        });
    }
}
