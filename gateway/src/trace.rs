//! W3C trace context at the edge. The gateway's request span is the parent of the backend's:
//! with OpenTelemetry export configured the span's real context is injected; without it
//! the gateway still keeps the trace whole, continuing the client's trace id (or starting
//! one) under a span id of its own, so the backend's logs join the client's trace.

use opentelemetry::trace::TraceContextExt;
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` to send to the backend for a request that arrived with `incoming`.
pub(crate) fn outgoing(span: &tracing::Span, incoming: Option<&str>) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        return format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        );
    }
    let mut rng = rand::rng();
    let span_id = format!("{:016x}", rng.random::<u64>().max(1));
    match incoming.and_then(parse) {
        Some((trace_id, flags)) => format!("00-{trace_id}-{span_id}-{flags}"),
        None => format!("00-{:032x}-{span_id}-01", rng.random::<u128>().max(1)),
    }
}

/// The trace id and flags of a valid version-00 `traceparent`.
fn parse(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.split('-');
    let (version, trace_id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace_id, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some((trace_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn continues_the_clients_trace_under_its_own_span() {
        let out = outgoing(&tracing::Span::none(), Some(CLIENT));
        let parts: Vec<&str> = out.split('-').collect();
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's span, not the client's");
        assert_eq!(parts[3], "01");
        assert!(parse(&out).is_some());
    }

    #[test]
    fn starts_a_trace_for_a_missing_or_invalid_one() {
        for incoming in
            [None, Some("garbage"), Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")]
        {
            let out = outgoing(&tracing::Span::none(), incoming);
            assert!(parse(&out).is_some(), "{out}");
            assert!(!out.contains("4bf92f35"));
        }
    }
}
