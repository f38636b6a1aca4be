//! The process's tracing subscriber: log lines filtered by `RUST_LOG`, and, with the feature
//! `opentelemetry` and `GRANARY_OTLP` set, the spans exported over OTLP/HTTP.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::NodeError;

/// The log lines: `RUST_LOG`, `warn` by default.
fn fmt_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    // stderr: stdout is the process's interface (the ready line comes first on it).
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
}

/// What must be flushed when the silo stops.
pub(crate) struct Telemetry {
    /// The OTLP export, when `GRANARY_OTLP` is set.
    #[cfg(feature = "opentelemetry")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// Installs the process's subscriber (unless one is installed already). `otlp` is the resolved
/// traces URL (`GRANARY_OTLP` + `/v1/traces`); `None` in a build without the feature.
#[cfg(not(feature = "opentelemetry"))]
#[allow(
    clippy::unnecessary_wraps,
    reason = "the same signature as the build with the feature"
)]
pub(crate) fn install(_silo: &str, _otlp: Option<&str>) -> Result<Telemetry, NodeError> {
    let _ = tracing_subscriber::registry().with(fmt_layer()).try_init();
    Ok(Telemetry {})
}

/// Installs the process's subscriber (unless one is installed already). `otlp` is the resolved
/// traces URL (`GRANARY_OTLP` + `/v1/traces`): the spans of `granary_silo` (the `grain.call`
/// spans, level debug) and the info spans of everything else go there, as service `silo`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn install(silo: &str, otlp: Option<&str>) -> Result<Telemetry, NodeError> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    let provider = otlp.map(|url| provider(silo, url)).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("granary"))
            .with_filter(
                Targets::new()
                    .with_default(LevelFilter::INFO)
                    .with_target("granary_silo", LevelFilter::DEBUG),
            )
    });
    let installed = tracing_subscriber::registry()
        .with(fmt_layer())
        .with(otel)
        .try_init()
        .is_ok();
    if provider.is_some() && !installed {
        tracing::warn!("a tracing subscriber was installed before: GRANARY_OTLP exports nothing");
    }
    Ok(Telemetry { provider })
}

/// A tracer provider exporting to `url` in batches, as service `silo`.
#[cfg(feature = "opentelemetry")]
fn provider(
    silo: &str,
    url: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, NodeError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url)
        .build()
        .map_err(|e| NodeError::Setting {
            name: "GRANARY_OTLP",
            problem: format!("cannot export to {url}: {e}"),
        })?;
    // The batches are sent from the silo's Tokio runtime: hyper needs it.
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(silo.to_owned())
                .build(),
        )
        .build())
}

impl Telemetry {
    /// Sends the spans not exported yet and stops the export.
    #[allow(
        clippy::unused_async,
        reason = "awaits the flush in the build with the feature"
    )]
    pub(crate) async fn shutdown(self) {
        #[cfg(feature = "opentelemetry")]
        if let Some(provider) = self.provider {
            // The flush blocks until the batch task (on this runtime) has sent the last batch.
            match tokio::task::spawn_blocking(move || provider.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(cause = %err, "OpenTelemetry export: the last spans may be lost");
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "OpenTelemetry export: the flush failed");
                }
            }
        }
    }
}
