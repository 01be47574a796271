//! The leader's collection loop: every interval, find the collector pods (the EndpointSlices
//! of the shards' Services), read their counters, add what changed to each tenant's ledger,
//! and write the tenants whose figures or `Delivering` changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use super::Series;
use super::counters::{InstanceCounters, read_counters};
use super::ledger::TenantLedger;
use super::verdict::delivering;
use crate::api::TelemetryTenant;
use crate::api::condition_types::DELIVERING;
use crate::api::delivery::DeliveryStatus;
use crate::controller::conditions::{self, Decided};
use crate::metrics::Metrics;
use crate::resources::{LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_NAME};

/// The field manager of the figures and `Delivering`, apart from the reconcile's.
pub const FIELD_MANAGER: &str = "telemux-delivery";
/// The shard Services' port the collector serves its own metrics on.
const METRICS_PORT_NAME: &str = "metrics";
/// Pods read at once.
const READS_IN_FLIGHT: usize = 16;
/// Status writes at once.
const WRITES_IN_FLIGHT: usize = 8;

/// How the figures are collected.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// How often the collectors' counters are read.
    pub interval: Duration,
    /// How long items may go undelivered before `Delivering` turns False.
    pub grace: Duration,
    /// Whether `telemux_tenant_items_total` carries a series per tenant.
    pub per_tenant_metrics: bool,
    /// Bound on reading one pod.
    pub read_timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(300),
            per_tenant_metrics: false,
            read_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("listing the collectors' EndpointSlices: {0}")]
    List(#[from] kube::Error),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A tenant's ledger and what was last written from it.
struct Tracked {
    ledger: TenantLedger,
    written: Option<(DeliveryStatus, Decided)>,
}

/// Collects until the future is dropped (the leader's controllers stop).
pub async fn collect_delivery(
    client: Client,
    slices: Api<EndpointSlice>,
    tenants: Store<TelemetryTenant>,
    settings: DeliverySettings,
    metrics: Arc<Metrics>,
) {
    let http = match reqwest::Client::builder()
        .timeout(settings.read_timeout)
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "delivery figures are not collected");
            return;
        }
    };
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = collect_once(
            &client,
            &slices,
            &http,
            &tenants,
            &settings,
            &metrics,
            &mut tracked,
        )
        .await
        {
            tracing::warn!(%error, "collecting delivery figures");
        }
    }
}

async fn collect_once(
    client: &Client,
    slices: &Api<EndpointSlice>,
    http: &reqwest::Client,
    tenants: &Store<TelemetryTenant>,
    settings: &DeliverySettings,
    metrics: &Metrics,
    tracked: &mut HashMap<String, Tracked>,
) -> Result<(), CollectError> {
    let selector = format!(
        "{LABEL_MANAGED_BY}=telemux,{LABEL_NAME}=telemux-collector,{LABEL_COMPONENT}=collector"
    );
    let listed = slices
        .list(&ListParams::default().labels(&selector))
        .await?;
    let targets = metrics_urls(&listed.items);
    let reads: Vec<(String, Result<InstanceCounters, String>)> = futures::stream::iter(targets)
        .map(|(namespace, url)| async move {
            let read = read_pod(http, &url).await;
            (namespace, read.map_err(|e| format!("{url}: {e}")))
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .collect()
        .await;
    let now = Timestamp::now();
    let by_id = tenants_by_id(tenants);
    let mut seen_instances = HashSet::new();
    for (namespace, read) in reads {
        let counters = match read {
            Ok(counters) => counters,
            Err(error) => {
                metrics.delivery_read("error");
                tracing::debug!(%error, "reading a collector's counters");
                continue;
            }
        };
        metrics.delivery_read("ok");
        // One process listed twice (two address families) is read once.
        if !seen_instances.insert(counters.instance.clone()) {
            continue;
        }
        for (tenant_id, values) in &counters.tenants {
            let Some(tenant) = by_id.get(&(namespace.clone(), tenant_id.clone())) else {
                continue; // a tenant deleted since its collector last rolled
            };
            let Some(uid) = tenant.uid() else { continue };
            let entry = tracked.entry(uid).or_insert_with(|| Tracked {
                ledger: TenantLedger::resume(
                    tenant.status.as_ref().and_then(|s| s.delivery.as_ref()),
                    now,
                ),
                written: None,
            });
            let added = entry.ledger.record(&counters.instance, values, now);
            count_in_metrics(metrics, settings, tenant, &added);
        }
    }
    let live: HashMap<String, Arc<TelemetryTenant>> = tenants
        .state()
        .into_iter()
        .filter_map(|t| Some((t.uid()?, t)))
        .collect();
    tracked.retain(|uid, _| live.contains_key(uid));
    let grace = SignedDuration::try_from(settings.grace).unwrap_or(SignedDuration::MAX);
    let mut writes = Vec::new();
    for (uid, entry) in tracked.iter_mut() {
        entry.ledger.age(now);
        let status = entry.ledger.status(now);
        let verdict = delivering(&entry.ledger, now, grace);
        let tenant = &live[uid];
        // The window's start moves with the clock alone: not a reason to write.
        let unchanged = match (&entry.written, tenant.status.as_ref()) {
            (Some((s, v)), _) => same_figures(s, &status) && *v == verdict,
            // First seen by this leader: as the status already stands?
            (None, Some(stored)) => {
                let condition = stored.conditions.iter().find(|c| c.type_ == DELIVERING);
                stored
                    .delivery
                    .as_ref()
                    .is_some_and(|d| same_figures(d, &status))
                    && condition.is_some_and(|c| same_condition(c, &verdict))
            }
            (None, None) => false,
        };
        if unchanged {
            continue;
        }
        writes.push((uid.clone(), tenant.clone(), status, verdict));
    }
    // Remembered as written only once written: a failed write is tried again next time.
    let written: Vec<(String, DeliveryStatus, Decided)> = futures::stream::iter(writes)
        .map(|(uid, tenant, status, verdict)| async move {
            match write_delivery(client, &tenant, &status, &verdict).await {
                Ok(()) => Some((uid, status, verdict)),
                Err(error) => {
                    tracing::warn!(%error, namespace = tenant.namespace(), name = tenant.name_any(), "writing delivery figures");
                    None
                }
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .filter_map(futures::future::ready)
        .collect()
        .await;
    for (uid, status, verdict) in written {
        if let Some(entry) = tracked.get_mut(&uid) {
            entry.written = Some((status, verdict));
        }
    }
    Ok(())
}

/// Every serving pod's metrics URL, with its namespace.
fn metrics_urls(slices: &[EndpointSlice]) -> Vec<(String, String)> {
    let mut urls = BTreeMap::new();
    for slice in slices {
        let Some(namespace) = slice.namespace() else {
            continue;
        };
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(METRICS_PORT_NAME))
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            // A terminating pod still serving is still read: what it counts while it drains.
            let serving = endpoint.conditions.as_ref().and_then(|c| c.serving);
            if serving == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                let host = match address.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                    _ => address.clone(),
                };
                urls.insert(format!("http://{host}:{port}/metrics"), namespace.clone());
            }
        }
    }
    urls.into_iter().map(|(url, ns)| (ns, url)).collect()
}

async fn read_pod(http: &reqwest::Client, url: &str) -> Result<InstanceCounters, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    read_counters(&text).map_err(|e| e.to_string())
}

/// The tenant each (namespace, tenant id) names: the oldest claiming it, as routing decides.
fn tenants_by_id(
    tenants: &Store<TelemetryTenant>,
) -> HashMap<(String, String), Arc<TelemetryTenant>> {
    let mut by_id: HashMap<(String, String), Arc<TelemetryTenant>> = HashMap::new();
    for tenant in tenants.state() {
        let Some(namespace) = tenant.namespace() else {
            continue;
        };
        let key = (namespace, tenant.spec.tenant_id.clone());
        let older = |t: &TelemetryTenant| (t.meta().creation_timestamp.clone(), t.name_any());
        match by_id.get(&key) {
            Some(kept) if older(kept) <= older(&tenant) => {}
            _ => {
                by_id.insert(key, tenant);
            }
        }
    }
    by_id
}

fn count_in_metrics(
    metrics: &Metrics,
    settings: &DeliverySettings,
    tenant: &TelemetryTenant,
    added: &BTreeMap<Series, u64>,
) {
    for (series, items) in added {
        let code = series.code.as_deref().unwrap_or("");
        metrics.delivery_items(&series.signal, series.outcome.as_str(), code, *items);
        if settings.per_tenant_metrics {
            metrics.tenant_items(
                &tenant.spec.tenant_id,
                &series.signal,
                series.outcome.as_str(),
                code,
                *items,
            );
        }
    }
}

fn same_condition(stored: &Condition, decided: &Decided) -> bool {
    stored.status == decided.status.as_str()
        && stored.reason == decided.reason
        && stored.message == decided.message
}

fn same_figures(a: &DeliveryStatus, b: &DeliveryStatus) -> bool {
    let without_window_start = |s: &DeliveryStatus| DeliveryStatus {
        recent_since: None,
        ..s.clone()
    };
    without_window_start(a) == without_window_start(b)
}

/// Applies the figures and `Delivering` as [`FIELD_MANAGER`]: the reconcile's fields and
/// conditions are left alone (conditions are a list-map keyed by type).
async fn write_delivery(
    client: &Client,
    tenant: &TelemetryTenant,
    status: &DeliveryStatus,
    verdict: &Decided,
) -> Result<(), kube::Error> {
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = conditions::merge(previous, vec![verdict.clone()], tenant.metadata.generation);
    let patch = serde_json::json!({
        "apiVersion": TelemetryTenant::api_version(&()),
        "kind": TelemetryTenant::kind(&()),
        "status": { "delivery": status, "conditions": condition },
    });
    let namespace = tenant.namespace().unwrap_or_default();
    let api: Api<TelemetryTenant> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}
