//! Reads one collector process's Prometheus text into per-tenant counter series.
//!
//! The series telemux reads (the collector's `service.telemetry.metrics` at level `normal`):
//! - `target_info{service_instance_id}`: which process this is;
//! - `otelcol_processor_incoming_items{processor,otel_signal}`: items entering a tenant's
//!   tier stamp (accepted), or an excluded tenant's drop filter (dropped, by reason);
//! - `otelcol_processor_{incoming,outgoing}_items` of a tenant's sampler: what went in and
//!   did not come out was sampled out (dropped, `Sampled`);
//! - `telemux_appinsights_items_{succeeded,dropped,retried}{exporter,signal,...}`: the
//!   tenant exporter's outcomes, summed over telemetry types.

use std::collections::BTreeMap;

use super::{Outcome, Series};
use crate::api::reasons;
use crate::pipeline::component_ids;

const TARGET_INFO: &str = "target_info";
const PROCESSOR_INCOMING: &str = "otelcol_processor_incoming_items";
const PROCESSOR_OUTGOING: &str = "otelcol_processor_outgoing_items";
const SUCCEEDED: &str = "telemux_appinsights_items_succeeded";
const DROPPED: &str = "telemux_appinsights_items_dropped";
const RETRIED: &str = "telemux_appinsights_items_retried";

/// One process's counters, per tenant id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceCounters {
    /// The process's `service.instance.id`.
    pub instance: String,
    pub tenants: BTreeMap<String, BTreeMap<Series, u64>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CountersError {
    #[error("the metrics do not name the collector process (no target_info service_instance_id)")]
    NoInstance,
    #[error("the metrics are not Prometheus text: {0}")]
    Unreadable(String),
}

/// The counters of `text`, a collector's `/metrics` answer.
pub fn read_counters(text: &str) -> Result<InstanceCounters, CountersError> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines)
        .map_err(|e| CountersError::Unreadable(e.to_string()))?;
    let mut counters = InstanceCounters::default();
    // Per (tenant, signal): what entered and left its sampler.
    let mut sampler: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for sample in &scrape.samples {
        let name = sample
            .metric
            .strip_suffix("_total")
            .unwrap_or(&sample.metric);
        let label = |key: &str| sample.labels.get(key);
        if name == TARGET_INFO {
            if let Some(id) = label("service_instance_id") {
                counters.instance = id.to_owned();
            }
            continue;
        }
        let Some(value) = count_of(&sample.value) else {
            continue;
        };
        if name == PROCESSOR_INCOMING || name == PROCESSOR_OUTGOING {
            let of_sampler = label("processor").and_then(component_ids::sampler_tenant);
            if let Some((tenant, signal)) = of_sampler.zip(label("otel_signal")) {
                let entry = sampler
                    .entry((tenant.to_owned(), signal.to_owned()))
                    .or_default();
                if name == PROCESSOR_INCOMING {
                    entry.0 += value;
                } else {
                    entry.1 += value;
                }
                continue;
            }
        }
        let found: Vec<(String, Series)> = match name {
            PROCESSOR_INCOMING => label("processor")
                .zip(label("otel_signal"))
                .map(|(processor, signal)| processor_series(processor, signal))
                .unwrap_or_default(),
            SUCCEEDED | DROPPED | RETRIED => {
                let tenant = label("exporter").and_then(component_ids::exporter_tenant);
                let outcome = match name {
                    SUCCEEDED => (Outcome::Delivered, None),
                    DROPPED => (Outcome::Dropped, label("drop_code")),
                    _ => (Outcome::Retried, label("retry_code")),
                };
                let coded = outcome.0 != Outcome::Delivered;
                tenant
                    .zip(label("signal"))
                    .filter(|_| coded == outcome.1.is_some())
                    .map(|(tenant, signal)| {
                        (tenant.to_owned(), Series::new(signal, outcome.0, outcome.1))
                    })
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        };
        for (tenant, series) in found {
            if !super::SIGNALS.contains(&series.signal.as_str()) {
                continue;
            }
            // Telemetry types of one series add up.
            *counters
                .tenants
                .entry(tenant)
                .or_default()
                .entry(series)
                .or_default() += value;
        }
    }
    for ((tenant, signal), (entered, left)) in sampler {
        let sampled_out = entered.saturating_sub(left);
        if sampled_out > 0 && super::SIGNALS.contains(&signal.as_str()) {
            let series = Series::new(&signal, Outcome::Dropped, Some(reasons::SAMPLED));
            counters
                .tenants
                .entry(tenant)
                .or_default()
                .insert(series, sampled_out);
        }
    }
    if counters.instance.is_empty() {
        return Err(CountersError::NoInstance);
    }
    Ok(counters)
}

/// A whole, non-negative count; anything else is not a counter telemux wrote.
fn count_of(value: &prometheus_parse::Value) -> Option<u64> {
    let v = match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v)
        | prometheus_parse::Value::Gauge(v) => *v,
        _ => return None,
    };
    // Counts are integers well below 2^53, where f64 is exact.
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

/// The tenant's series an incoming-items count of `processor` stands for.
fn processor_series(processor: &str, signal: &str) -> Vec<(String, Series)> {
    let accepted = |tenant: &str| {
        (
            tenant.to_owned(),
            Series::new(signal, Outcome::Accepted, None),
        )
    };
    if let Some(tenant) = component_ids::tier_stamp_tenant(processor) {
        return vec![accepted(tenant)];
    }
    match component_ids::exclusion_filter_tenant(processor) {
        // Accepted from the client, and dropped for the reason.
        Some((tenant, reason)) => vec![
            accepted(tenant),
            (
                tenant.to_owned(),
                Series::new(signal, Outcome::Dropped, Some(reason.name)),
            ),
        ],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the collector serves it (trimmed): HELP/TYPE lines, other components' series.
    const SCRAPE: &str = r#"# HELP otelcol_processor_incoming_items Number of items passed to the processor.
# TYPE otelcol_processor_incoming_items counter
otelcol_processor_incoming_items{otel_signal="traces",processor="resource/tenant_acme"} 7
otelcol_processor_incoming_items{otel_signal="logs",processor="resource/tenant_acme"} 2
otelcol_processor_incoming_items{otel_signal="traces",processor="filter/suspended_globex"} 4
otelcol_processor_incoming_items{otel_signal="traces",processor="memory_limiter"} 13
otelcol_processor_outgoing_items{otel_signal="traces",processor="resource/tenant_acme"} 7
otelcol_processor_incoming_items{otel_signal="traces",processor="probabilistic_sampler/tenant_acme"} 7
otelcol_processor_outgoing_items{otel_signal="traces",processor="probabilistic_sampler/tenant_acme"} 4
# TYPE target_info gauge
target_info{service_instance_id="b859-1",service_name="telemux-otelcol",service_version="0.161.0-telemux"} 1
# TYPE telemux_appinsights_items_succeeded counter
telemux_appinsights_items_succeeded{exporter="telemux_appinsights/tenant_acme",signal="traces",telemetry_type="REQUEST"} 5
telemux_appinsights_items_succeeded{exporter="telemux_appinsights/tenant_acme",signal="traces",telemetry_type="EXCEPTION"} 1
telemux_appinsights_items_succeeded{exporter="telemux_appinsights/platform",signal="traces",telemetry_type="REQUEST"} 50
# TYPE telemux_appinsights_items_dropped counter
telemux_appinsights_items_dropped{drop_code="400",exporter="telemux_appinsights/tenant_acme",signal="traces",telemetry_type="REQUEST"} 1
# TYPE telemux_appinsights_items_retried counter
telemux_appinsights_items_retried{exporter="telemux_appinsights/tenant_acme",retry_code="429",signal="logs",telemetry_type="TRACE"} 3
"#;

    #[test]
    fn a_scrape_becomes_each_tenants_series() {
        let counters = read_counters(SCRAPE).unwrap();
        assert_eq!(counters.instance, "b859-1");
        let acme = &counters.tenants["acme"];
        let get = |s: Series| acme.get(&s).copied();
        assert_eq!(get(Series::new("traces", Outcome::Accepted, None)), Some(7));
        assert_eq!(get(Series::new("logs", Outcome::Accepted, None)), Some(2));
        // REQUEST and EXCEPTION items of traces add up.
        assert_eq!(
            get(Series::new("traces", Outcome::Delivered, None)),
            Some(6)
        );
        assert_eq!(
            get(Series::new("traces", Outcome::Dropped, Some("400"))),
            Some(1)
        );
        assert_eq!(
            get(Series::new("logs", Outcome::Retried, Some("429"))),
            Some(3)
        );
        assert_eq!(
            get(Series::new("traces", Outcome::Dropped, Some("Sampled"))),
            Some(3)
        );
        assert_eq!(acme.len(), 6);
        let globex = &counters.tenants["globex"];
        assert_eq!(
            globex.get(&Series::new("traces", Outcome::Dropped, Some("Suspended"))),
            Some(&4)
        );
        assert_eq!(
            globex.get(&Series::new("traces", Outcome::Accepted, None)),
            Some(&4)
        );
        // The platform's exporter and shared processors are nobody's figures.
        assert_eq!(counters.tenants.len(), 2);
    }

    #[test]
    fn a_scrape_that_does_not_name_its_process_is_refused() {
        let without = SCRAPE
            .lines()
            .filter(|l| !l.starts_with("target_info"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(read_counters(&without), Err(CountersError::NoInstance));
        assert_eq!(read_counters("<html>"), Err(CountersError::NoInstance));
    }
}
