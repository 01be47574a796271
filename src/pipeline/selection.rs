//! Which collectors consider which tenants: one decision, used by planning (who is in a
//! collector's configuration), by the watches (whom a change requeues) and by a tenant's
//! `Routed` condition (is any collector meant to serve it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{RegionalCollector, RegionalCollectorSpec, TelemetryTenant};

/// How a collector picks its tenants.
#[derive(Debug, Clone)]
pub enum Selection {
    /// No selector: the tenants whose `regions` allow the collector's region.
    Region(String),
    /// A `tenantSelector`: the tenants whose labels match, whatever their regions (those not
    /// allowed in the region are accepted and dropped, counted).
    Labels(Selector),
}

impl Selection {
    /// The collector's selection; an invalid `tenantSelector` is the collector's error.
    pub fn of(spec: &RegionalCollectorSpec) -> Result<Self, kube::core::ParseExpressionError> {
        Ok(match &spec.tenant_selector {
            Some(selector) => Selection::Labels(Selector::try_from(selector.clone())?),
            None => Selection::Region(spec.region.clone()),
        })
    }

    pub fn selects(&self, labels: &BTreeMap<String, String>, regions: &[String]) -> bool {
        match self {
            Selection::Labels(selector) => selector.matches(labels),
            Selection::Region(region) => regions.contains(region),
        }
    }
}

/// What a collector's status says about each tenant, indexed once per status: a region's
/// collector lists thousands of tenants, and every tenant reconcile asks about one (scanning
/// the lists was a good part of the operator's CPU in a burst).
#[derive(Debug, Default)]
pub struct Listing {
    routed: HashSet<String>,
    /// Tenant id → exclusion reason (the first listed).
    excluded: HashMap<String, String>,
    /// TelemetryTenant name → (reason, message) of the first rejection that is a verdict,
    /// not "not ready for it yet" (`reasons::is_tenant_pending`).
    rejected: HashMap<String, (String, String)>,
}

impl Listing {
    pub fn of(collector: &RegionalCollector) -> Self {
        let mut listing = Listing::default();
        let Some(status) = &collector.status else {
            return listing;
        };
        listing.routed = status.routed_tenants.iter().cloned().collect();
        for e in &status.excluded_tenants {
            listing
                .excluded
                .entry(e.tenant_id.clone())
                .or_insert_with(|| e.reason.clone());
        }
        let verdicts = status
            .rejected_tenants
            .iter()
            .filter(|r| !crate::api::reasons::is_tenant_pending(&r.reason));
        for r in verdicts {
            listing
                .rejected
                .entry(r.name.clone())
                .or_insert_with(|| (r.reason.clone(), r.message.clone()));
        }
        listing
    }

    pub fn routes(&self, tenant_id: &str) -> bool {
        self.routed.contains(tenant_id)
    }

    /// Why the collector accepts and drops the tenant's telemetry, if it does.
    pub fn exclusion(&self, tenant_id: &str) -> Option<&str> {
        self.excluded.get(tenant_id).map(String::as_str)
    }

    /// The collector's rejection of the TelemetryTenant `name`: (reason, message).
    pub fn rejection(&self, name: &str) -> Option<(&str, &str)> {
        self.rejected
            .get(name)
            .map(|(reason, message)| (reason.as_str(), message.as_str()))
    }

    /// Does the status list the tenant at all (routed, excluded or rejected)?
    pub fn acknowledges(&self, name: &str, tenant_id: &str) -> bool {
        self.routes(tenant_id)
            || self.excluded.contains_key(tenant_id)
            || self.rejected.contains_key(name)
    }
}

/// A collector with its [`Listing`].
#[derive(Debug, Clone)]
pub struct ListedCollector {
    pub collector: Arc<RegionalCollector>,
    pub listing: Arc<Listing>,
}

impl ListedCollector {
    /// Indexes the collector's status (tests, and callers without a memo).
    pub fn new(collector: Arc<RegionalCollector>) -> Self {
        let listing = Arc::new(Listing::of(&collector));
        ListedCollector { collector, listing }
    }
}

impl std::ops::Deref for ListedCollector {
    type Target = RegionalCollector;

    fn deref(&self) -> &RegionalCollector {
        &self.collector
    }
}

/// Does `collector` select `tenant` (same namespace, and its selection picks the tenant)? A
/// collector with an invalid selector selects no one.
pub fn collector_selects(collector: &RegionalCollector, tenant: &TelemetryTenant) -> bool {
    collector.namespace() == tenant.namespace()
        && Selection::of(&collector.spec)
            .is_ok_and(|s| s.selects(tenant.labels(), &tenant.spec.regions))
}

/// Does `collector` consider `tenant`: select it now, or still list it in its status (a tenant
/// that left must be rendered away, so its change concerns the collector too)?
pub fn collector_considers(collector: &RegionalCollector, tenant: &TelemetryTenant) -> bool {
    if collector.namespace() != tenant.namespace() {
        return false;
    }
    // Selection first: the status lists can hold thousands of tenants.
    collector_selects(collector, tenant)
        || collector.status.as_ref().is_some_and(|s| {
            let id = &tenant.spec.tenant_id;
            s.routed_tenants.contains(id)
                || s.excluded_tenants.iter().any(|e| &e.tenant_id == id)
                || s.rejected_tenants
                    .iter()
                    .any(|r| r.name == tenant.name_any())
        })
}

/// Whom one collector considers, for asking about many tenants (the same answers as
/// [`collector_considers`]): its selection is parsed and its status lists are indexed once, as a
/// region's collector lists thousands of tenants.
pub struct Considered<'a> {
    collector: &'a RegionalCollector,
    selection: Option<Selection>,
    listed_ids: BTreeSet<&'a str>,
    listed_names: BTreeSet<&'a str>,
}

impl<'a> Considered<'a> {
    pub fn by(collector: &'a RegionalCollector) -> Self {
        let status = collector.status.as_ref();
        let listed_ids = status
            .into_iter()
            .flat_map(|s| {
                let routed = s.routed_tenants.iter().map(String::as_str);
                routed.chain(s.excluded_tenants.iter().map(|e| e.tenant_id.as_str()))
            })
            .collect();
        let listed_names = status
            .into_iter()
            .flat_map(|s| s.rejected_tenants.iter().map(|r| r.name.as_str()))
            .collect();
        Considered {
            collector,
            selection: Selection::of(&collector.spec).ok(),
            listed_ids,
            listed_names,
        }
    }

    pub fn includes(&self, tenant: &TelemetryTenant) -> bool {
        if self.collector.namespace() != tenant.namespace() {
            return false;
        }
        self.listed_ids.contains(tenant.spec.tenant_id.as_str())
            || self.listed_names.contains(tenant.name_any().as_str())
            || self
                .selection
                .as_ref()
                .is_some_and(|s| s.selects(tenant.labels(), &tenant.spec.regions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(region: &str, selector: Option<serde_json::Value>) -> RegionalCollector {
        let mut spec = serde_json::json!({ "region": region });
        if let Some(selector) = selector {
            spec["tenantSelector"] = selector;
        }
        let mut c = RegionalCollector::new(region, serde_json::from_value(spec).unwrap());
        c.metadata.namespace = Some("ns".into());
        c
    }

    fn tenant(regions: &[&str], tier: &str) -> TelemetryTenant {
        let spec = serde_json::json!({
            "tenantId": "acme", "regions": regions,
            "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
        });
        let mut t = TelemetryTenant::new("acme", serde_json::from_value(spec).unwrap());
        t.metadata.namespace = Some("ns".into());
        t.metadata.labels = Some([("tier".to_owned(), tier.to_owned())].into());
        t
    }

    #[test]
    fn without_a_selector_the_region_decides_and_with_one_the_labels_do() {
        let premium = Some(serde_json::json!({ "matchLabels": { "tier": "premium" } }));
        assert!(collector_selects(
            &collector("westeurope", None),
            &tenant(&["westeurope"], "standard")
        ));
        assert!(!collector_selects(
            &collector("westeurope", premium.clone()),
            &tenant(&["westeurope"], "standard")
        ));
        assert!(collector_selects(
            &collector("westeurope", premium),
            &tenant(&["eastus"], "premium")
        ));
    }

    #[test]
    fn an_invalid_selector_selects_no_one_and_other_namespaces_never_match() {
        let invalid = Some(serde_json::json!({
            "matchExpressions": [{ "key": "tier", "operator": "In" }]
        }));
        assert!(!collector_selects(
            &collector("westeurope", invalid),
            &tenant(&["westeurope"], "premium")
        ));
        let mut elsewhere = collector("westeurope", None);
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!collector_considers(
            &elsewhere,
            &tenant(&["westeurope"], "premium")
        ));
        assert!(!Considered::by(&elsewhere).includes(&tenant(&["westeurope"], "premium")));
    }
}
