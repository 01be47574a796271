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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{RegionalCollector, TelemetryTenant};
use crate::pipeline::selection::{Considered, collector_considers};
use crate::resources::LABEL_COLLECTOR;

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

/// What a collector's status says about each tenant it lists, by tenant id (routed,
/// excluded) or TelemetryTenant name (rejected).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdicts {
    generation: Option<i64>,
    by_id: BTreeMap<String, String>,
    by_name: BTreeMap<String, String>,
}

impl Verdicts {
    pub fn of(collector: &RegionalCollector) -> Self {
        let mut verdicts = Verdicts {
            generation: collector.metadata.generation,
            ..Verdicts::default()
        };
        if let Some(status) = &collector.status {
            for id in &status.routed_tenants {
                verdicts.by_id.insert(id.clone(), "routed".into());
            }
            for e in &status.excluded_tenants {
                verdicts.by_id.insert(e.tenant_id.clone(), e.reason.clone());
            }
            // "Not ready for it yet" reads as not listed on the tenant (`decide::routed`).
            let decided = status
                .rejected_tenants
                .iter()
                .filter(|r| !crate::api::reasons::is_tenant_pending(&r.reason));
            for r in decided {
                verdicts
                    .by_name
                    .insert(r.name.clone(), format!("{}: {}", r.reason, r.message));
            }
            // A shard's endpoint is part of what a tenant reports.
            for shard in &status.shards {
                verdicts
                    .by_id
                    .entry(format!("shard/{}", shard.index))
                    .or_default();
            }
        }
        verdicts
    }

    /// Tenant ids and names whose verdict differs between `self` and `next`.
    fn changed(&self, next: &Verdicts) -> (BTreeSet<String>, BTreeSet<String>) {
        fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
            let mut changed: BTreeSet<String> = a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect();
            changed.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
            changed
        }
        (
            diff(&self.by_id, &next.by_id),
            diff(&self.by_name, &next.by_name),
        )
    }
}

/// Remembers what each collector's status said, so that a status change requeues only the
/// tenants whose verdict changed: with thousands of tenants, requeueing every tenant at every
/// collector status change kept the API server busy with reconciles that changed nothing.
#[derive(Default)]
pub struct CollectorVerdicts(std::sync::Mutex<BTreeMap<(Option<String>, String), Verdicts>>);

impl CollectorVerdicts {
    /// The tenants to requeue for this collector change: all it considers when it is new to
    /// this process, its spec changed or it was deleted (`exists` false), else those whose
    /// verdict changed.
    pub fn tenants_to_requeue(
        &self,
        tenants: &[Arc<TelemetryTenant>],
        collector: &RegionalCollector,
        exists: bool,
    ) -> Vec<ObjectRef<TelemetryTenant>> {
        let next = Verdicts::of(collector);
        let key = (collector.namespace(), collector.name_any());
        let previous = {
            let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if exists {
                memo.insert(key, next.clone())
            } else {
                memo.remove(&key);
                None
            }
        };
        match previous {
            Some(previous) if previous.generation == next.generation => {
                let (ids, names) = previous.changed(&next);
                tenants
                    .iter()
                    .filter(|t| t.namespace() == collector.namespace())
                    .filter(|t| ids.contains(&t.spec.tenant_id) || names.contains(&t.name_any()))
                    .map(|t| ObjectRef::from_obj(&**t))
                    .collect()
            }
            _ => tenants_of_collector(tenants, collector),
        }
    }
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

/// A Secret telemux wrote: the collector it belongs to, or the collectors of the tenant that
/// owns it (`owner`, looked up by the caller from the Secret's owner reference: with thousands
/// of tenants, a scan of all of them per Secret change was a good part of the operator's CPU).
pub fn collectors_of_managed_secret(
    collectors: &[Arc<RegionalCollector>],
    owner: Option<&TelemetryTenant>,
    secret: &Secret,
) -> Vec<ObjectRef<RegionalCollector>> {
    if let Some(name) = secret.labels().get(LABEL_COLLECTOR) {
        return vec![ObjectRef::new(name).within(&secret.namespace().unwrap_or_default())];
    }
    owner
        .map(|tenant| collectors_of_tenant(collectors, tenant))
        .unwrap_or_default()
}

/// The TelemetryTenant a Secret belongs to, by its owner reference.
pub fn owning_tenant(secret: &Secret) -> Option<ObjectRef<TelemetryTenant>> {
    let owner = secret
        .owner_references()
        .iter()
        .find(|o| o.kind == "TelemetryTenant" && o.api_version.starts_with("telemux.io/"))?;
    Some(ObjectRef::new(&owner.name).within(&secret.namespace()?))
}

/// Remembers each shard record's entries, so that a record change requeues only the tenants
/// it added, moved or dropped: a record is rewritten each time its shard gains tenants, and
/// requeueing all of its (up to 500) tenants each time was most tenant reconciles of a burst.
#[derive(Default)]
pub struct ShardRecordEntries(std::sync::Mutex<BTreeMap<RecordKey, BTreeMap<String, String>>>);

/// A shard record by namespace and name.
type RecordKey = (Option<String>, String);

impl ShardRecordEntries {
    /// The tenants whose entry changed; all of them when the record is new to this process
    /// or gone (`exists` false).
    pub fn tenants_to_requeue(
        &self,
        record: &ConfigMap,
        exists: bool,
    ) -> Vec<ObjectRef<TelemetryTenant>> {
        let namespace = record.namespace();
        let entries = record.data.clone().unwrap_or_default();
        let key = (namespace.clone(), record.name_any());
        let previous = {
            let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if exists {
                memo.insert(key, entries.clone())
            } else {
                memo.remove(&key)
            }
        };
        let changed: BTreeSet<&String> = match &previous {
            Some(previous) if exists => entries
                .iter()
                .filter(|(tenant, shard)| previous.get(*tenant) != Some(*shard))
                .map(|(tenant, _)| tenant)
                .chain(previous.keys().filter(|t| !entries.contains_key(*t)))
                .collect(),
            _ => entries
                .keys()
                .chain(previous.iter().flat_map(|p| p.keys()))
                .collect(),
        };
        let namespace = namespace.unwrap_or_default();
        changed
            .into_iter()
            .map(|tenant| ObjectRef::new(tenant).within(&namespace))
            .collect()
    }
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

    #[test]
    fn a_shard_record_requeues_the_tenants_whose_entry_changed() {
        let collector = collector("eu", "westeurope", None);
        let mut collector = (*collector).clone();
        collector.metadata.namespace = Some("tenants".into());
        let record = |tenants: &[&str]| {
            let tenants = tenants.iter().map(|t| t.to_string()).collect();
            crate::resources::collector::shard_record(&collector, 1, &tenants)
        };
        let refs = |names: &[&str]| -> Vec<ObjectRef<TelemetryTenant>> {
            names
                .iter()
                .map(|n| ObjectRef::new(n).within("tenants"))
                .collect()
        };
        let entries = ShardRecordEntries::default();
        // New to this process: every tenant it lists.
        let first = entries.tenants_to_requeue(&record(&["acme", "globex"]), true);
        assert_eq!(first, refs(&["acme", "globex"]));
        // Gaining a tenant requeues that tenant only; losing one, that one.
        let gained = entries.tenants_to_requeue(&record(&["acme", "globex", "initech"]), true);
        assert_eq!(gained, refs(&["initech"]));
        let lost = entries.tenants_to_requeue(&record(&["acme", "initech"]), true);
        assert_eq!(lost, refs(&["globex"]));
        assert!(
            entries
                .tenants_to_requeue(&record(&["acme", "initech"]), true)
                .is_empty()
        );
        // Deleted: all it listed.
        let deleted = entries.tenants_to_requeue(&record(&["acme", "initech"]), false);
        assert_eq!(deleted, refs(&["acme", "initech"]));
    }

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

    #[test]
    fn a_tenants_secret_requeues_the_collectors_of_its_owner() {
        let mut acme = tenant("acme", &["westeurope"]);
        acme.metadata.uid = Some("uid-acme".into());
        let secret = crate::resources::tenant::credentials_secret(&acme, "p", "h", &[]);
        assert_eq!(
            owning_tenant(&secret),
            Some(ObjectRef::new("acme").within("ns"))
        );
        let collectors = [
            collector("eu", "westeurope", None),
            collector("us", "eastus", None),
        ];
        let requeued = collectors_of_managed_secret(&collectors, Some(&acme), &secret);
        assert_eq!(names(requeued), ["eu"]);
        assert!(collectors_of_managed_secret(&collectors, None, &secret).is_empty());
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
    fn a_status_change_requeues_only_the_tenants_whose_verdict_changed() {
        let memo = CollectorVerdicts::default();
        let tenants: Vec<Arc<TelemetryTenant>> = ["acme", "globex", "initech"]
            .iter()
            .map(|n| Arc::new(tenant(n, &["westeurope"])))
            .collect();
        let mut eu = (*collector("eu", "westeurope", None)).clone();
        eu.metadata.generation = Some(1);
        let names = |refs: Vec<ObjectRef<TelemetryTenant>>| -> Vec<String> {
            refs.into_iter().map(|r| r.name).collect()
        };
        // First sight: everyone it considers.
        assert_eq!(
            names(memo.tenants_to_requeue(&tenants, &eu, true)),
            ["acme", "globex", "initech"]
        );
        eu.status = Some(crate::api::RegionalCollectorStatus {
            routed_tenants: vec!["acme".into()],
            ..Default::default()
        });
        assert_eq!(
            names(memo.tenants_to_requeue(&tenants, &eu, true)),
            ["acme"]
        );
        // Nothing changed: no one.
        assert!(memo.tenants_to_requeue(&tenants, &eu, true).is_empty());
        if let Some(status) = eu.status.as_mut() {
            status.routed_tenants.push("globex".into());
        }
        assert_eq!(
            names(memo.tenants_to_requeue(&tenants, &eu, true)),
            ["globex"]
        );
        // A spec change: everyone again.
        eu.metadata.generation = Some(2);
        assert_eq!(names(memo.tenants_to_requeue(&tenants, &eu, true)).len(), 3);
        // Deleted (its last state, unchanged): everyone it considered.
        assert_eq!(
            names(memo.tenants_to_requeue(&tenants, &eu, false)).len(),
            3
        );
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
