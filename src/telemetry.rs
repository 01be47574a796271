//! Logs (text or JSON on stderr) and, optionally, the operator's own traces over OTLP/HTTP.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// TLS is left to a collector next to the operator (a sidecar or the node's agent): the
    /// OTLP exporter's TLS stack would add a second crypto library to the binary.
    #[error(
        "OTLP endpoint {endpoint:?} is not an http:// URL (send to a collector in the cluster)"
    )]
    InvalidEndpoint { endpoint: String },
    #[error("building the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Flushes exported spans when dropped (at shutdown).
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemux: flushing traces at shutdown failed: {error}");
        }
    }
}

/// The URL spans are POSTed to: the signal path appended to a base endpoint, as the
/// OTLP exporter specification says of `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let endpoint = endpoint.trim();
    if !endpoint.starts_with("http://") || endpoint.len() == "http://".len() {
        return Err(TelemetryError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
        });
    }
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

/// Installs the global subscriber. `RUST_LOG` filters both logs and exported spans
/// (default `info,kube=warn`).
pub fn init(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let provider = otlp_endpoint.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("telemux"))
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .init();
    Ok(TelemetryGuard(provider))
}

fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint)?)
        .build()?;
    let mut resource = Resource::builder()
        .with_service_name("telemux")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Ok(pod) = std::env::var("POD_NAME") {
        resource = resource.with_attribute(KeyValue::new("k8s.pod.name", pod));
    }
    if let Ok(namespace) = std::env::var("POD_NAMESPACE") {
        resource = resource.with_attribute(KeyValue::new("k8s.namespace.name", namespace));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_to_the_base_endpoint() {
        assert_eq!(
            traces_url("http://collector:4318").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        for bad in ["collector:4318", "https://collector:4318", "http://"] {
            assert!(
                matches!(traces_url(bad), Err(TelemetryError::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
    }
}
