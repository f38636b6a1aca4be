//! OpenTelemetry (feature `opentelemetry`): a `grain.call` span joins the OTel trace whose id is
//! its call chain's trace id.

use granary_core::TraceId;
use opentelemetry::trace::{self as otel, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` (not entered yet) a child of a sampled remote span in the OTel trace `trace`.
///
/// Only the trace id travels with calls, so the parent is a stand-in: its span id is derived
/// from the trace id (the same on every silo), and no silo exports a span with that id. Does
/// nothing when no OpenTelemetry layer is installed or the span is disabled.
pub(crate) fn join_trace(span: &tracing::Span, trace: TraceId) {
    if span.is_disabled() {
        return;
    }
    let parent = otel::SpanContext::new(
        otel_trace_id(trace),
        parent_span_id(trace),
        otel::TraceFlags::SAMPLED,
        true,
        otel::TraceState::default(),
    );
    // No OTel layer (the process did not install one): nothing to join.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}

/// The OTel trace id of a Granary trace: the same 16 bytes, so both print as the same 32 hex
/// digits.
pub(crate) fn otel_trace_id(trace: TraceId) -> otel::TraceId {
    otel::TraceId::from_bytes(trace.0.to_be_bytes())
}

/// The stand-in parent's span id: the trace id's low 64 bits, never zero (an invalid id would
/// make the OTel SDK start a new trace).
fn parent_span_id(trace: TraceId) -> otel::SpanId {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the low 64 bits, on purpose"
    )]
    let low = trace.0 as u64;
    otel::SpanId::from_bytes(low.max(1).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_otel_ids_are_the_trace_ids_bytes() {
        let trace = TraceId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(otel_trace_id(trace).to_string(), trace.to_string());
        assert_eq!(parent_span_id(trace).to_string(), "fedcba9876543210");
        assert_ne!(parent_span_id(TraceId(1 << 64)), otel::SpanId::INVALID);
    }
}
