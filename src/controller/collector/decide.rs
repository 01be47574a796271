//! The collector reconcile's decisions, pure: what the plan is made from, what the status and
//! conditions say, and what is worth announcing.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::observe::ObservedCollector;
use crate::api::condition_types::{AVAILABLE, CONFIG_VALID};
use crate::api::reasons::{self, Reason};
use crate::api::{RegionalCollector, RegionalCollectorStatus};
use crate::controller::conditions::{Decided, Status, merge, ready};
use crate::pipeline::{CollectorPlan, CollectorSources, RenderedConfig};

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

/// Is this configuration new for the collector (worth a `ConfigRendered` event)?
pub fn is_new_config(collector: &RegionalCollector, rendered: &RenderedConfig) -> bool {
    let previous = collector
        .status
        .as_ref()
        .and_then(|s| s.config_hash.as_deref());
    previous != Some(rendered.hash.as_str())
}

/// The status after a rollout of `plan`.
pub fn rolled_out_status(
    collector: &RegionalCollector,
    plan: CollectorPlan,
    rendered: &RenderedConfig,
    workload: &StatefulSet,
) -> RegionalCollectorStatus {
    RegionalCollectorStatus {
        observed_generation: collector.metadata.generation,
        conditions: Vec::new(),
        config_hash: Some(rendered.hash.clone()),
        ready_replicas: workload
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        tenant_count: i32::try_from(plan.routed.len()).unwrap_or(i32::MAX),
        routed_tenants: plan.routed.into_iter().map(|t| t.tenant_id).collect(),
        excluded_tenants: plan.excluded,
        rejected_tenants: plan.rejected,
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
    let want = collector.spec.replicas;
    let Some(workload) = workload else {
        return Decided::new(
            AVAILABLE,
            Status::Unknown,
            reasons::NOT_ROLLED_OUT,
            "no configuration has been rolled out",
        );
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
    mut decided: Vec<Decided>,
    mut status: RegionalCollectorStatus,
) -> Option<RegionalCollectorStatus> {
    let blocking: Vec<Decided> = decided
        .iter()
        .filter(|d| d.status != Status::Unknown)
        .cloned()
        .collect();
    decided.push(ready(
        &blocking,
        reasons::READY.name,
        "the collector serves its tenants",
    ));
    let previous = collector
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = merge(previous, decided, collector.metadata.generation);
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
