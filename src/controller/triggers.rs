//! What requeues what, and what rolls a collector. `crate::run` wires these to the watches.
//!
//! A **tenant** is reconciled when it changes, when a Secret telemux wrote for it changes
//! (credential, connection string: it owns them), when a user Secret its
//! `applicationInsights.existing` names changes, and when a collector that considers it
//! changes (its status says whether it routes the tenant).
//!
//! A **collector** is reconciled (debounced, but never more than ten debounce periods after
//! the first trigger of a burst: `context::Pacing`) when it changes,
//! when a child changes (ConfigMap, Secret, StatefulSet, Service), when a tenant it considers
//! changes (selects now, or still lists: a tenant that left must be rendered away), when a
//! Secret telemux wrote for one of those tenants changes, and when a user Secret its spec names
//! (regional storage, platform connection string) changes.
//!
//! A collector **rollout** (new pods) happens exactly when its StatefulSet's pod template
//! changes (`crate::resources::collector::stateful_set`): the template carries the SHA-256 of
//! the rendered configuration and of the collector Secret's files as annotations, so a change
//! of either rolls the pods, and anything else (a tenant change that renders the same bytes, a
//! status update, a resync) does not. The configuration changes when a considered tenant's
//! routing-relevant spec (id, tier, regions, signals, redaction, sampling, suspend, labels
//! under a selector) or the collector's spec changes; the Secret when a tenant's credential or
//! connection string, or the platform's or storage's, changes. The pod template also follows
//! the collector's `image`, `resources` and the operator's `--collector-image`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{RegionalCollector, TelemetryTenant};
use crate::pipeline::selection::{Considered, collector_considers};
use crate::resources::{LABEL_COLLECTOR, LABEL_TENANT};

/// A tenant change requeues only the collectors that consider it.
pub fn collectors_of_tenant(
    collectors: &[Arc<RegionalCollector>],
    tenant: &TelemetryTenant,
) -> Vec<ObjectRef<RegionalCollector>> {
    collectors
        .iter()
        .filter(|c| collector_considers(c, tenant))
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// A collector's change (its status above all) may change the Routed condition of the
/// tenants it considers.
pub fn tenants_of_collector(
    tenants: &[Arc<TelemetryTenant>],
    collector: &RegionalCollector,
) -> Vec<ObjectRef<TelemetryTenant>> {
    let considered = Considered::by(collector);
    tenants
        .iter()
        .filter(|t| considered.includes(t))
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}

/// A Secret telemux wrote: the collector it belongs to, or the collectors of its tenant.
pub fn collectors_of_managed_secret(
    collectors: &[Arc<RegionalCollector>],
    tenants: &[Arc<TelemetryTenant>],
    secret: &Secret,
) -> Vec<ObjectRef<RegionalCollector>> {
    let labels = secret.labels();
    if let Some(name) = labels.get(LABEL_COLLECTOR) {
        return vec![ObjectRef::new(name).within(&secret.namespace().unwrap_or_default())];
    }
    let Some(tenant_id) = labels.get(LABEL_TENANT) else {
        return Vec::new();
    };
    tenants
        .iter()
        .filter(|t| t.namespace() == secret.namespace() && &t.spec.tenant_id == tenant_id)
        .flat_map(|t| collectors_of_tenant(collectors, t))
        .collect()
}

/// A user Secret (by namespace and name): the tenants whose existing connection string it holds.
pub fn tenants_of_user_secret(
    tenants: &[Arc<TelemetryTenant>],
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<TelemetryTenant>> {
    tenants
        .iter()
        .filter(|t| t.namespace().as_deref() == namespace)
        .filter(|t| {
            t.spec
                .application_insights
                .existing
                .as_ref()
                .is_some_and(|e| e.connection_string_secret_ref.name == name)
        })
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}

/// A user Secret (by namespace and name): the collectors whose spec names it.
pub fn collectors_of_user_secret(
    collectors: &[Arc<RegionalCollector>],
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<RegionalCollector>> {
    collectors
        .iter()
        .filter(|c| {
            c.namespace().as_deref() == namespace && referenced_secrets(c).any(|s| s == name)
        })
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// User Secrets a collector's spec names.
fn referenced_secrets(collector: &RegionalCollector) -> impl Iterator<Item = &str> {
    let spec = &collector.spec;
    let blob = spec
        .regional_storage
        .as_ref()
        .map(|s| s.azure_blob.connection_string_secret_ref.name.as_str());
    let platform = spec
        .platform
        .as_ref()
        .and_then(|p| p.application_insights.as_ref())
        .map(|ai| ai.connection_string_secret_ref.name.as_str());
    blob.into_iter().chain(platform)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(
        name: &str,
        region: &str,
        selector: Option<serde_json::Value>,
    ) -> Arc<RegionalCollector> {
        let mut spec = serde_json::json!({ "region": region });
        if let Some(selector) = selector {
            spec["tenantSelector"] = selector;
        }
        let mut c = RegionalCollector::new(name, serde_json::from_value(spec).unwrap());
        c.metadata.namespace = Some("ns".into());
        Arc::new(c)
    }

    fn tenant(id: &str, regions: &[&str]) -> TelemetryTenant {
        let spec = serde_json::json!({
            "tenantId": id, "regions": regions,
            "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
        });
        let mut t = TelemetryTenant::new(id, serde_json::from_value(spec).unwrap());
        t.metadata.namespace = Some("ns".into());
        t
    }

    fn names(refs: Vec<ObjectRef<RegionalCollector>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_tenant_change_requeues_only_the_collectors_of_its_regions() {
        let collectors = vec![
            collector("eu", "westeurope", None),
            collector("us", "eastus", None),
            collector(
                "eu-premium",
                "westeurope",
                Some(serde_json::json!({ "matchLabels": { "tier": "premium" } })),
            ),
        ];
        assert_eq!(
            names(collectors_of_tenant(
                &collectors,
                &tenant("acme", &["westeurope"])
            )),
            ["eu"]
        );
        assert_eq!(
            names(collectors_of_tenant(
                &collectors,
                &tenant("acme", &["eastus", "westeurope"])
            )),
            ["eu", "us"]
        );
        let mut premium = tenant("acme", &["northeurope"]);
        premium.metadata.labels = Some([("tier".to_owned(), "premium".to_owned())].into());
        assert_eq!(
            names(collectors_of_tenant(&collectors, &premium)),
            ["eu-premium"]
        );
    }

    #[test]
    fn a_tenant_leaving_a_region_still_requeues_the_collector_that_lists_it() {
        let mut eu = (*collector("eu", "westeurope", None)).clone();
        eu.status = Some(crate::api::RegionalCollectorStatus {
            routed_tenants: vec!["acme".into()],
            ..Default::default()
        });
        let collectors = vec![Arc::new(eu), collector("us", "eastus", None)];
        assert_eq!(
            names(collectors_of_tenant(
                &collectors,
                &tenant("acme", &["eastus"])
            )),
            ["eu", "us"]
        );
        // And the collector's status change reaches the tenant that left it.
        let tenants = vec![
            Arc::new(tenant("acme", &["eastus"])),
            Arc::new(tenant("globex", &["eastus"])),
            Arc::new(tenant("initech", &["westeurope"])),
        ];
        let requeued: Vec<String> = tenants_of_collector(&tenants, &collectors[0])
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(requeued, ["acme", "initech"]);
    }

    #[test]
    fn other_namespaces_are_never_requeued() {
        let mut other = (*collector("eu", "westeurope", None)).clone();
        other.metadata.namespace = Some("elsewhere".into());
        assert!(
            collectors_of_tenant(&[Arc::new(other)], &tenant("acme", &["westeurope"])).is_empty()
        );
    }
}
