//! The collector reconcile's decisions, pure: what the plan is made from, what the status and
//! conditions say, and what is worth announcing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::apps::v1::StatefulSet;

use super::observe::ObservedCollector;
use crate::api::collector::ShardStatus;
use crate::api::condition_types::{AVAILABLE, CONFIG_VALID};
use crate::api::reasons::{self, Reason};
use crate::api::{RegionalCollector, RegionalCollectorStatus};
use crate::controller::conditions::{Decided, Status, with_ready};
use crate::pipeline::shards::ShardIndex;
use crate::pipeline::{CollectorPlan, CollectorSources, RenderedConfig, TenantSource};

/// Everything the plan is made from: what was observed, and the platform credential's hash.
pub fn sources(
    collector: &RegionalCollector,
    observed: ObservedCollector,
    platform_password_hash: Option<String>,
) -> CollectorSources {
    CollectorSources {
        spec: collector.spec.clone(),
        platform_password_hash,
        platform_connection_string: observed.platform_connection_string,
        blob_connection_string: observed.blob_connection_string,
        tenants: observed.tenants,
    }
}

/// Why the exporters' in-memory batches are a risk, when they are: rolled out all the same
/// (refusing would stop every tenant of the region), but one tenant's outage could now make
/// memory_limiter refuse the others.
pub fn memory_budget_warning(plan: &CollectorPlan) -> Option<String> {
    let budget = crate::pipeline::render::plan_queue_budget(plan);
    (!budget.fits).then(|| {
        format!(
            "the exporters' batches may hold {} MiB in memory, more than half of memory_limiter's soft limit ({} MiB): raise resources.limits.memory or serve fewer tenants per collector",
            budget.in_memory_bytes >> 20,
            budget.soft_limit_bytes >> 20
        )
    })
}

/// Is this configuration new for the shard (worth a `ConfigRendered` event)?
pub fn is_new_config(
    collector: &RegionalCollector,
    shard: ShardIndex,
    rendered: &RenderedConfig,
) -> bool {
    let status = collector.status.as_ref();
    let previous = status
        .and_then(|s| s.shards.iter().find(|s| s.index == shard))
        .and_then(|s| s.config_hash.as_deref())
        // A status from before shards: its one configuration was shard 0's.
        .or_else(|| {
            status
                .filter(|s| s.shards.is_empty() && shard == 0)?
                .config_hash
                .as_deref()
        });
    previous != Some(rendered.hash.as_str())
}

/// The tenants the collector serves (routed, or accepted and dropped), oldest first, by
/// TelemetryTenant name: the members shards are assigned.
pub fn members(sources: &CollectorSources, plan: &CollectorPlan) -> Vec<String> {
    let served: BTreeSet<&str> = plan
        .routed
        .iter()
        .map(|t| t.tenant_id.as_str())
        .chain(plan.excluded.iter().map(|e| e.tenant_id.as_str()))
        .collect();
    let mut tenants: Vec<&TenantSource> = sources
        .tenants
        .iter()
        .filter(|t| served.contains(t.spec.tenant_id.as_str()))
        .filter(|t| !plan.rejected.iter().any(|r| r.name == t.name))
        .collect();
    tenants.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    tenants.into_iter().map(|t| t.name.clone()).collect()
}

/// The sources of each shard: the collector's, with only the shard's tenants. One pass over
/// the region's tenants, however many shards it has.
pub fn sources_by_shard(
    sources: &CollectorSources,
    shards: &BTreeMap<ShardIndex, Vec<String>>,
) -> BTreeMap<ShardIndex, CollectorSources> {
    let shard_of: HashMap<&str, ShardIndex> = shards
        .iter()
        .flat_map(|(index, members)| members.iter().map(|m| (m.as_str(), *index)))
        .collect();
    let mut by_shard: BTreeMap<ShardIndex, CollectorSources> = shards
        .keys()
        .map(|index| (*index, sources.with_tenants(Vec::new())))
        .collect();
    for tenant in &sources.tenants {
        let shard = shard_of
            .get(tenant.name.as_str())
            .and_then(|index| by_shard.get_mut(index));
        if let Some(shard) = shard {
            shard.tenants.push(tenant.clone());
        }
    }
    by_shard
}

/// What became of one shard in this reconcile.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    /// Tenants assigned to the shard.
    pub members: usize,
    /// Its ConfigValid verdict.
    pub config_valid: Decided,
    /// The plan rolled out, or `None` when the shard's new configuration was refused (the
    /// last good one stays live).
    pub plan: Option<CollectorPlan>,
    pub config_hash: Option<String>,
    pub workload: Option<StatefulSet>,
}

/// The collector's status from its shards: who is routed where, the shards, and the
/// conditions (the first shard that refused, or is not available, speaks for the collector).
pub fn sharded_status(
    collector: &RegionalCollector,
    whole: &CollectorPlan,
    shards: &BTreeMap<ShardIndex, ShardOutcome>,
) -> (RegionalCollectorStatus, Vec<Decided>) {
    let previous = collector.status.clone().unwrap_or_default();
    let mut status = RegionalCollectorStatus {
        observed_generation: collector.metadata.generation,
        rejected_tenants: whole.rejected.clone(),
        ..RegionalCollectorStatus::default()
    };
    for (index, shard) in shards {
        match &shard.plan {
            Some(plan) => {
                status
                    .routed_tenants
                    .extend(plan.routed.iter().map(|t| t.tenant_id.clone()));
                status
                    .excluded_tenants
                    .extend(plan.excluded.iter().cloned());
                status
                    .rejected_tenants
                    .extend(plan.rejected.iter().cloned());
            }
            // Refused: what it served before still runs.
            None => keep_previous(&previous, whole, &mut status),
        }
        status.shards.push(ShardStatus {
            index: *index,
            tenant_count: i32::try_from(shard.members).unwrap_or(i32::MAX),
            ready_replicas: ready_replicas(shard.workload.as_ref()),
            config_hash: shard.config_hash.clone(),
        });
    }
    finish_lists(&mut status);
    let decided = vec![config_valid(shards), available_of(collector, shards)];
    (status, decided)
}

fn keep_previous(
    previous: &RegionalCollectorStatus,
    whole: &CollectorPlan,
    status: &mut RegionalCollectorStatus,
) {
    let served = |id: &str| {
        whole.routed.iter().any(|t| t.tenant_id == id)
            || whole.excluded.iter().any(|e| e.tenant_id == id)
    };
    status.routed_tenants.extend(
        previous
            .routed_tenants
            .iter()
            .filter(|id| served(id))
            .cloned(),
    );
    status.excluded_tenants.extend(
        previous
            .excluded_tenants
            .iter()
            .filter(|e| served(&e.tenant_id))
            .cloned(),
    );
}

fn finish_lists(status: &mut RegionalCollectorStatus) {
    status.routed_tenants.sort();
    status.routed_tenants.dedup();
    status
        .excluded_tenants
        .sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    status.excluded_tenants.dedup();
    status.rejected_tenants.sort_by(|a, b| a.name.cmp(&b.name));
    status.rejected_tenants.dedup();
    status.tenant_count = i32::try_from(status.routed_tenants.len()).unwrap_or(i32::MAX);
    status.shard_count = i32::try_from(status.shards.len()).unwrap_or(i32::MAX);
    status.ready_replicas = status.shards.iter().map(|s| s.ready_replicas).sum();
    status.config_hash = combined_hash(&status.shards);
}

/// One shard: its configuration's hash. Several: a hash over theirs, which changes whenever
/// any shard's does.
fn combined_hash(shards: &[ShardStatus]) -> Option<String> {
    match shards {
        [only] => only.config_hash.clone(),
        _ => {
            let lines: String = shards
                .iter()
                .map(|s| format!("{}:{}\n", s.index, s.config_hash.as_deref().unwrap_or("")))
                .collect();
            Some(crate::pipeline::render::hex_sha256(lines.as_bytes()))
        }
    }
}

fn ready_replicas(workload: Option<&StatefulSet>) -> i32 {
    workload
        .and_then(|w| w.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// ConfigValid of the collector: the first shard refused, else the first unchecked, else valid.
fn config_valid(shards: &BTreeMap<ShardIndex, ShardOutcome>) -> Decided {
    let of_shard = |index: &ShardIndex, d: &Decided| {
        let mut d = d.clone();
        if shards.len() > 1 {
            d.message = format!("shard {index}: {}", d.message);
        }
        d
    };
    let first = |status: Status| shards.iter().find(|(_, s)| s.config_valid.status == status);
    if let Some((index, shard)) = first(Status::False).or_else(|| first(Status::Unknown)) {
        return of_shard(index, &shard.config_valid);
    }
    let left_out = shards
        .iter()
        .find(|(_, s)| s.config_valid.message.contains("leaving out"));
    match left_out.or_else(|| shards.iter().next()) {
        Some((index, shard)) => of_shard(index, &shard.config_valid),
        None => Decided::new(
            CONFIG_VALID,
            Status::Unknown,
            reasons::NOT_ROLLED_OUT,
            "no shard",
        ),
    }
}

/// Available when every shard is; otherwise the first shard that is not speaks.
fn available_of(
    collector: &RegionalCollector,
    shards: &BTreeMap<ShardIndex, ShardOutcome>,
) -> Decided {
    let each: Vec<(ShardIndex, Decided)> = shards
        .iter()
        .map(|(index, s)| (*index, available(collector, s.workload.as_ref())))
        .collect();
    if let Some((index, blocking)) = each.iter().find(|(_, d)| d.status != Status::True) {
        let mut blocking = blocking.clone();
        if each.len() > 1 {
            blocking.message = format!("shard {index}: {}", blocking.message);
        }
        return blocking;
    }
    match each.as_slice() {
        [(_, only)] => only.clone(),
        _ => {
            let message = format!(
                "{} shards, each with its collector pods available",
                each.len()
            );
            let reason = each.first().map_or(
                reasons::MINIMUM_REPLICAS_AVAILABLE.name.to_owned(),
                |(_, d)| d.reason.clone(),
            );
            Decided::new(AVAILABLE, Status::True, reason, message)
        }
    }
}

/// The status when nothing new can be rolled out: what is live stays listed.
pub fn refused_status(
    collector: &RegionalCollector,
    reason: Reason,
    message: String,
    live: Option<&StatefulSet>,
) -> (RegionalCollectorStatus, Vec<Decided>) {
    let mut status = collector.status.clone().unwrap_or_default();
    status.observed_generation = collector.metadata.generation;
    let decided = vec![
        Decided::new(CONFIG_VALID, Status::False, reason, message),
        available(collector, live),
    ];
    (status, decided)
}

/// Available, from the StatefulSet's status.
pub fn available(collector: &RegionalCollector, workload: Option<&StatefulSet>) -> Decided {
    let Some(workload) = workload else {
        return Decided::new(
            AVAILABLE,
            Status::Unknown,
            reasons::NOT_ROLLED_OUT,
            "no configuration has been rolled out",
        );
    };
    // An autoscaled shard wants what its autoscaler last chose.
    let want = match collector.spec.autoscaling {
        Some(_) => workload.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        None => collector.spec.replicas,
    };
    let status = workload.status.clone().unwrap_or_default();
    // A rolling update is over when the revision every pod runs is the one wanted.
    let current = status.observed_generation >= workload.metadata.generation
        && status.current_revision == status.update_revision;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if want == 0 {
        Decided::new(
            AVAILABLE,
            Status::True,
            reasons::SCALED_TO_ZERO,
            "replicas is 0",
        )
    } else if current && updated == want && available == want && status.replicas == want {
        Decided::new(
            AVAILABLE,
            Status::True,
            reasons::MINIMUM_REPLICAS_AVAILABLE,
            format!("{available}/{want} collector pods available"),
        )
    } else {
        Decided::new(
            AVAILABLE,
            Status::False,
            reasons::ROLLING_OUT,
            format!("{available}/{want} collector pods available, {updated} up to date"),
        )
    }
}

/// The status to write, with `Ready` summarising the conditions; `None` when it equals the
/// stored one. Unknown validity (no validator) does not block readiness; a rejected config does.
pub fn status(
    collector: &RegionalCollector,
    decided: Vec<Decided>,
    mut status: RegionalCollectorStatus,
) -> Option<RegionalCollectorStatus> {
    let previous = collector
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = with_ready(
        previous,
        decided,
        |d| d.status != Status::Unknown,
        "the collector serves its tenants",
        collector.metadata.generation,
    );
    (collector.status.as_ref() != Some(&status)).then_some(status)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    use super::*;

    fn collector(replicas: i32) -> RegionalCollector {
        let spec = serde_json::json!({ "region": "westeurope", "replicas": replicas });
        let mut c = RegionalCollector::new("westeurope", serde_json::from_value(spec).unwrap());
        c.metadata.generation = Some(3);
        c
    }

    fn workload(status: StatefulSetStatus) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.generation = Some(7);
        s.status = Some(status);
        s
    }

    fn rolled(available: i32, updated: i32, same_revision: bool) -> StatefulSetStatus {
        StatefulSetStatus {
            observed_generation: Some(7),
            replicas: 2,
            available_replicas: Some(available),
            updated_replicas: Some(updated),
            current_revision: Some("a".into()),
            update_revision: Some(if same_revision { "a" } else { "b" }.into()),
            ..Default::default()
        }
    }

    #[test]
    fn available_only_when_every_pod_runs_the_wanted_revision() {
        let c = collector(2);
        let done = available(&c, Some(&workload(rolled(2, 2, true))));
        assert_eq!(done.reason, "MinimumReplicasAvailable");
        let mid = available(&c, Some(&workload(rolled(2, 1, false))));
        assert_eq!(
            (mid.status, mid.reason.as_str()),
            (Status::False, "RollingOut")
        );
        let stale = available(&c, Some(&workload(rolled(2, 2, false))));
        assert_eq!(stale.reason, "RollingOut", "old revision still current");
        assert_eq!(available(&c, None).status, Status::Unknown);
        assert_eq!(
            available(&collector(0), Some(&workload(rolled(0, 0, true)))).reason,
            "ScaledToZero"
        );
    }

    #[test]
    fn an_autoscaled_shard_is_available_at_the_size_its_autoscaler_chose() {
        let mut c = collector(2);
        c.spec.autoscaling =
            Some(serde_json::from_value(serde_json::json!({ "maxReplicas": 5 })).unwrap());
        let mut three = workload(StatefulSetStatus {
            replicas: 3,
            ..rolled(3, 3, true)
        });
        three.spec = Some(k8s_openapi::api::apps::v1::StatefulSetSpec {
            replicas: Some(3),
            ..Default::default()
        });
        assert_eq!(
            available(&c, Some(&three)).reason,
            "MinimumReplicasAvailable"
        );
        c.spec.autoscaling = None;
        assert_eq!(
            available(&c, Some(&three)).reason,
            "RollingOut",
            "spec.replicas is 2"
        );
    }

    #[test]
    fn unknown_validity_does_not_block_ready_and_a_rejection_does() {
        let c = collector(2);
        let up = available(&c, Some(&workload(rolled(2, 2, true))));
        let unchecked = Decided::new(
            CONFIG_VALID,
            Status::Unknown,
            reasons::NOT_VALIDATED,
            "unchecked",
        );
        let written = status(
            &c,
            vec![unchecked, up.clone()],
            RegionalCollectorStatus::default(),
        )
        .unwrap();
        let ready = written
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let (kept, decided) = refused_status(&c, reasons::CONFIG_TOO_LARGE, "too big".into(), None);
        let written = status(&c, decided, kept).unwrap();
        let ready = written
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ConfigTooLarge")
        );
    }

    fn sources(n: usize) -> CollectorSources {
        let tenants: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({
                "name": format!("t{i}"), "created": format!("2026-11-02T10:00:{:02}Z", 59 - i),
                "spec": { "tenantId": format!("t{i}"), "regions": ["westeurope"],
                          "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } } },
                "passwordHash": "$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWb",
                "connectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000001"
            }))
            .collect();
        serde_json::from_value(
            serde_json::json!({ "spec": { "region": "westeurope" }, "tenants": tenants }),
        )
        .unwrap()
    }

    #[test]
    fn members_are_the_served_tenants_oldest_first_and_shards_see_only_theirs() {
        let sources = sources(4);
        let plan = crate::pipeline::plan_collector(&sources).unwrap();
        // t3 was created first.
        assert_eq!(members(&sources, &plan), ["t3", "t2", "t1", "t0"]);
        let shards = BTreeMap::from([
            (0, vec!["t1".to_owned(), "t3".to_owned()]),
            (1, vec!["t0".to_owned()]),
            (2, vec![]),
        ]);
        let by_shard = sources_by_shard(&sources, &shards);
        let names = |i: ShardIndex| -> Vec<&str> {
            by_shard[&i]
                .tenants
                .iter()
                .map(|t| t.name.as_str())
                .collect()
        };
        assert_eq!(names(0), ["t1", "t3"]);
        assert_eq!(names(1), ["t0"]);
        assert!(names(2).is_empty());
        assert_eq!(by_shard.len(), 3, "t2 is in no shard and makes none");
    }

    fn outcome(
        plan: Option<CollectorPlan>,
        valid: Status,
        hash: &str,
        ready: bool,
    ) -> ShardOutcome {
        let workload = workload(rolled(if ready { 2 } else { 1 }, 2, true));
        ShardOutcome {
            members: plan.as_ref().map_or(0, |p| p.routed.len()),
            config_valid: Decided::new(
                CONFIG_VALID,
                valid,
                if valid == Status::False {
                    reasons::CONFIG_TOO_LARGE
                } else {
                    reasons::VALIDATED
                },
                "m",
            ),
            plan,
            config_hash: Some(hash.into()),
            workload: Some(workload),
        }
    }

    #[test]
    fn the_collector_status_sums_its_shards_and_the_first_problem_speaks() {
        let c = collector(2);
        let all = sources(4);
        let whole = crate::pipeline::plan_collector(&all).unwrap();
        let plan_of = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let shard = sources_by_shard(&all, &BTreeMap::from([(0, names)]));
            crate::pipeline::plan_collector(&shard[&0]).unwrap()
        };
        let shards = BTreeMap::from([
            (
                0,
                outcome(Some(plan_of(&["t0", "t1"])), Status::True, "a", true),
            ),
            (
                1,
                outcome(Some(plan_of(&["t2", "t3"])), Status::True, "b", false),
            ),
        ]);
        let (status, decided) = sharded_status(&c, &whole, &shards);
        assert_eq!(status.routed_tenants, ["t0", "t1", "t2", "t3"]);
        assert_eq!((status.shard_count, status.tenant_count), (2, 4));
        assert_eq!(status.shards[1].tenant_count, 2);
        assert_ne!(
            status.config_hash.as_deref(),
            Some("a"),
            "a hash over both shards"
        );
        assert_eq!(decided[0].status, Status::True);
        assert_eq!(
            (decided[1].status, decided[1].reason.as_str()),
            (Status::False, "RollingOut")
        );
        assert!(
            decided[1].message.starts_with("shard 1: "),
            "{}",
            decided[1].message
        );

        // A refused shard keeps what it served before, and says so.
        let mut previous = c.clone();
        previous.status = Some(status);
        let shards = BTreeMap::from([
            (
                0,
                outcome(Some(plan_of(&["t0", "t1"])), Status::True, "a", true),
            ),
            (1, outcome(None, Status::False, "b", true)),
        ]);
        let (status, decided) = sharded_status(&previous, &whole, &shards);
        assert_eq!(status.routed_tenants, ["t0", "t1", "t2", "t3"]);
        assert_eq!(
            (decided[0].status, decided[0].reason.as_str()),
            (Status::False, "ConfigTooLarge")
        );
        assert!(decided[0].message.starts_with("shard 1: "));
    }

    #[test]
    fn a_refusal_keeps_listing_what_is_live() {
        let mut c = collector(2);
        c.status = Some(RegionalCollectorStatus {
            routed_tenants: vec!["acme".into()],
            config_hash: Some("abc".into()),
            ..Default::default()
        });
        let (kept, _) = refused_status(&c, reasons::CONFIG_REJECTED, "no".into(), None);
        assert_eq!(kept.routed_tenants, ["acme"]);
        assert_eq!(kept.config_hash.as_deref(), Some("abc"));
        assert_eq!(kept.observed_generation, Some(3));
    }
}
