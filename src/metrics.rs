//! The operator's own metrics (Prometheus), served on `/metrics` by [`crate::server`].
//! Reconcile counters are also how tests observe that a reconcile ran without having to see a
//! write.
//!
//! | metric | labels |
//! | --- | --- |
//! | `telemux_reconciliations_total` | `controller` |
//! | `telemux_reconcile_failures_total` | `controller`, `error` |
//! | `telemux_reconcile_duration_seconds` | `controller` |
//! | `telemux_tenants` | `ready` (`true`, `false`, `unknown`) |
//! | `telemux_collectors` | `ready` |
//! | `telemux_azure_requests_total` | `operation` (`get`, `put`, `delete`), `outcome` |
//! | `telemux_azure_request_duration_seconds` | `operation` |
//! | `telemux_leader` | — |
//! | `telemux_delivery_items_total` | `signal`, `outcome` (`accepted`, `delivered`, `dropped`, `retried`), `code` (drops and retries) |
//! | `telemux_tenant_items_total` | `tenant` (its `tenantId`), `signal`, `outcome`, `code`: only with `--tenant-delivery-metrics` |
//! | `telemux_delivery_reads_total` | `outcome` (`ok`, `error`): reads of collector pods' counters |

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::condition_types::READY;
use crate::api::{RegionalCollector, TelemetryTenant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AzureLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    pub signal: String,
    pub outcome: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantItemLabels {
    pub tenant: String,
    pub signal: String,
    pub outcome: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: &'static str,
}

pub struct Metrics {
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub azure_requests: Family<AzureLabels, Counter>,
    pub azure_duration: Family<OperationLabels, Histogram>,
    /// 1 while this instance holds the leader Lease (always 1 without leader election).
    pub leader: Gauge,
    /// Items of all tenants, by what happened to them (from the collectors' counters).
    pub delivery_items: Family<ItemLabels, Counter>,
    /// The same per tenant, when enabled.
    pub tenant_items: Family<TenantItemLabels, Counter>,
    pub delivery_reads: Family<OutcomeLabels, Counter>,
    /// The controllers' caches, once they exist: tenants and collectors by Ready state are
    /// counted from them at scrape time, so the figures never drift from the cluster.
    stores: Arc<OnceLock<(Store<TelemetryTenant>, Store<RegionalCollector>)>>,
}

fn seconds_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciliations: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(seconds_buckets),
            azure_requests: Family::default(),
            azure_duration: Family::new_with_constructor(seconds_buckets),
            leader: Gauge::default(),
            delivery_items: Family::default(),
            tenant_items: Family::default(),
            delivery_reads: Family::default(),
            stores: Arc::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "telemux_reconciliations",
            "Reconciliations started",
            self.reconciliations.clone(),
        );
        registry.register(
            "telemux_reconcile_failures",
            "Reconciliations that failed, by error kind",
            self.failures.clone(),
        );
        registry.register(
            "telemux_reconcile_duration_seconds",
            "Duration of reconciliations",
            self.duration.clone(),
        );
        registry.register(
            "telemux_azure_requests",
            "Azure Resource Manager requests, by operation and outcome",
            self.azure_requests.clone(),
        );
        registry.register(
            "telemux_azure_request_duration_seconds",
            "Duration of Azure Resource Manager requests (including a token request when one is needed)",
            self.azure_duration.clone(),
        );
        registry.register(
            "telemux_leader",
            "1 while this instance holds the leader Lease and runs the controllers",
            self.leader.clone(),
        );
        registry.register(
            "telemux_delivery_items",
            "Items of all tenants by outcome, as the collectors counted them",
            self.delivery_items.clone(),
        );
        registry.register(
            "telemux_tenant_items",
            "Items per tenant by outcome, as the collectors counted them (--tenant-delivery-metrics)",
            self.tenant_items.clone(),
        );
        registry.register(
            "telemux_delivery_reads",
            "Reads of collector pods' counters, by outcome",
            self.delivery_reads.clone(),
        );
        registry.register_collector(Box::new(ReadyStates {
            stores: self.stores.clone(),
        }));
    }

    /// Counts tenants and collectors from these caches from now on (first call wins).
    pub fn observe_stores(
        &self,
        tenants: Store<TelemetryTenant>,
        collectors: Store<RegionalCollector>,
    ) {
        let _ = self.stores.set((tenants, collectors));
    }

    pub fn delivery_items(&self, signal: &str, outcome: &'static str, code: &str, items: u64) {
        let labels = ItemLabels {
            signal: signal.to_owned(),
            outcome,
            code: code.to_owned(),
        };
        self.delivery_items.get_or_create(&labels).inc_by(items);
    }

    pub fn tenant_items(
        &self,
        tenant: &str,
        signal: &str,
        outcome: &'static str,
        code: &str,
        items: u64,
    ) {
        let labels = TenantItemLabels {
            tenant: tenant.to_owned(),
            signal: signal.to_owned(),
            outcome,
            code: code.to_owned(),
        };
        self.tenant_items.get_or_create(&labels).inc_by(items);
    }

    pub fn delivery_read(&self, outcome: &'static str) {
        self.delivery_reads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let labels = ControllerLabels { controller };
        self.reconciliations.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, controller: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&ErrorLabels { controller, error })
            .inc();
    }

    pub fn azure_request(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.azure_requests
            .get_or_create(&AzureLabels { operation, outcome })
            .inc();
        self.azure_duration
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// Reconciliations of one controller so far.
    pub fn reconciliations_of(&self, controller: &'static str) -> u64 {
        self.reconciliations
            .get_or_create(&ControllerLabels { controller })
            .get()
    }
}

/// `telemux_tenants` and `telemux_collectors` by the status of their Ready condition.
#[derive(Debug)]
struct ReadyStates {
    stores: Arc<OnceLock<(Store<TelemetryTenant>, Store<RegionalCollector>)>>,
}

/// `true`, `false` or `unknown` (no Ready condition yet, or status Unknown).
fn ready_label(
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> &'static str {
    match conditions
        .and_then(|cs| cs.iter().find(|c| c.type_ == READY))
        .map(|c| c.status.as_str())
    {
        Some("True") => "true",
        Some("False") => "false",
        _ => "unknown",
    }
}

fn count_by_ready<'a>(
    labels: impl Iterator<Item = &'static str> + 'a,
) -> Family<ReadyLabels, Gauge> {
    let family = Family::<ReadyLabels, Gauge>::default();
    // Every state is always exported, so a state that empties reads 0 rather than vanishing.
    for ready in ["true", "false", "unknown"] {
        let _ = family.get_or_create(&ReadyLabels { ready });
    }
    for ready in labels {
        family.get_or_create(&ReadyLabels { ready }).inc();
    }
    family
}

impl Collector for ReadyStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((tenants, collectors)) = self.stores.get() else {
            return Ok(());
        };
        let tenant_states = tenants.state();
        let tenants = count_by_ready(
            tenant_states
                .iter()
                .map(|t| ready_label(t.status.as_ref().map(|s| s.conditions.as_slice()))),
        );
        let collector_states = collectors.state();
        let collectors = count_by_ready(
            collector_states
                .iter()
                .map(|c| ready_label(c.status.as_ref().map(|s| s.conditions.as_slice()))),
        );
        for (name, help, family) in [
            (
                "telemux_tenants",
                "TelemetryTenants by their Ready condition",
                tenants,
            ),
            (
                "telemux_collectors",
                "RegionalCollectors by their Ready condition",
                collectors,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn counters_and_histograms_are_exported_with_their_labels() {
        let metrics = Metrics::default();
        metrics.reconciled("tenant", Duration::from_millis(20));
        metrics.failed("collector", "kube");
        metrics.azure_request("put", "ok", Duration::from_millis(300));
        metrics.leader.set(1);
        let text = scrape(&metrics);
        for line in [
            "telemux_reconciliations_total{controller=\"tenant\"} 1",
            "telemux_reconcile_failures_total{controller=\"collector\",error=\"kube\"} 1",
            "telemux_reconcile_duration_seconds_count{controller=\"tenant\"} 1",
            "telemux_azure_requests_total{operation=\"put\",outcome=\"ok\"} 1",
            "telemux_azure_request_duration_seconds_count{operation=\"put\"} 1",
            "telemux_leader 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn ready_states_are_counted_from_conditions() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let condition = |status: &str| Condition {
            type_: READY.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Default::default(),
            ),
            observed_generation: None,
        };
        assert_eq!(ready_label(Some(&[condition("True")])), "true");
        assert_eq!(ready_label(Some(&[condition("False")])), "false");
        assert_eq!(ready_label(Some(&[condition("Unknown")])), "unknown");
        assert_eq!(ready_label(None), "unknown");
        let family = count_by_ready(["true", "true", "false"].into_iter());
        assert_eq!(
            family.get_or_create(&ReadyLabels { ready: "true" }).get(),
            2
        );
        assert_eq!(
            family.get_or_create(&ReadyLabels { ready: "false" }).get(),
            1
        );
        assert_eq!(
            family
                .get_or_create(&ReadyLabels { ready: "unknown" })
                .get(),
            0
        );
    }
}
