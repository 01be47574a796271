//! Plans, renders and checks a collector's configuration before anything is rolled out. When
//! the collector rejects it, the tenants whose own additions it rejects are left out (and
//! told), so one tenant cannot stop a region. Every check goes through one verdict cache, so a
//! configuration that stays rejected costs no collector process per reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::api::condition_types::CONFIG_VALID;
use crate::api::reasons::{self, Reason};
use crate::controller::Result;
use crate::controller::conditions::{Decided, Status};
use crate::pipeline::shards::ShardIndex;
use crate::pipeline::{
    CollectorPlan, CollectorSources, RenderedConfig, TenantSource, Vetoes, plan_collector,
    plan_collector_with_vetoes, render_collector_config,
};
use crate::validator::{ConfigValidator, Verdict};

/// ConfigMaps and Secrets hold at most 1 MiB of data; leave room for metadata.
pub const MAX_OBJECT_DATA: usize = 1_000_000;

/// A validator that checks each configuration (by rendered hash) once.
pub struct CachedValidator {
    inner: Arc<dyn ConfigValidator>,
    verdicts: Mutex<HashMap<String, Verdict>>,
}

impl CachedValidator {
    pub fn new(inner: Arc<dyn ConfigValidator>) -> Self {
        CachedValidator {
            inner,
            verdicts: Mutex::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    /// The verdict on `plan`, whose rendered configuration hashes to `hash`.
    pub async fn verdict(&self, plan: &CollectorPlan, hash: &str) -> Verdict {
        let cached = self.lock().get(hash).cloned();
        if let Some(verdict) = cached {
            return verdict;
        }
        let verdict = self.inner.validate(plan).await;
        // A validator that could not run is asked again next time.
        if !matches!(verdict, Verdict::Unchecked(_)) {
            let mut verdicts = self.lock();
            if verdicts.len() > 1024 {
                verdicts.clear(); // a bound, not an LRU: verdicts are cheap to recompute
            }
            verdicts.insert(hash.to_owned(), verdict.clone());
        }
        verdict
    }

    /// The verdict on a plan not rendered yet.
    async fn verdict_of(&self, plan: &CollectorPlan) -> Result<Verdict> {
        let rendered = render_collector_config(plan)?;
        Ok(self.verdict(plan, &rendered.hash).await)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verdict>> {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The outcome of planning, rendering and checking a configuration.
#[derive(Debug, Clone)]
pub enum Checked {
    Ready {
        plan: Box<CollectorPlan>,
        rendered: RenderedConfig,
        condition: Decided,
    },
    /// Nothing new can be rolled out; the last good configuration stays live.
    Refused { reason: Reason, message: String },
}

/// Each shard's last checked configuration, by the fingerprint of the sources it was planned
/// from (`CollectorSources::fingerprint`). A reconcile plans, renders and checks again only
/// the shards whose tenants or collector changed, so one tenant's change costs one shard's
/// rendering, not the region's. Holds only shards that exist (`retain`): one entry, up to a
/// shard's configuration, per live shard.
#[derive(Default)]
pub struct CheckedShards(Mutex<HashMap<ShardKey, ([u8; 32], Checked)>>);

/// A collector (`namespace/name`) and one of its shards.
pub type ShardKey = (String, ShardIndex);

impl CheckedShards {
    /// The shard's checked configuration: remembered when its sources are unchanged, else
    /// planned, rendered and checked now.
    pub async fn checked(
        &self,
        shard: &ShardKey,
        validator: Option<&CachedValidator>,
        sources: &CollectorSources,
    ) -> Result<Checked> {
        let fingerprint = sources.fingerprint();
        if let Some(fingerprint) = &fingerprint {
            let remembered = self.lock().get(shard).cloned();
            if let Some((seen, checked)) = remembered
                && seen == *fingerprint
            {
                return Ok(checked);
            }
        }
        let checked = checked_plan(validator, sources).await?;
        if let (Some(fingerprint), true) = (fingerprint, is_settled(&checked)) {
            let entry = (fingerprint, checked.clone());
            self.lock().insert(shard.clone(), entry);
        }
        Ok(checked)
    }

    /// Forgets the shards `keep` refuses: removed shards, and those of deleted collectors.
    pub fn retain(&self, keep: impl Fn(&ShardKey) -> bool) {
        self.lock().retain(|shard, _| keep(shard));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShardKey, ([u8; 32], Checked)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Would checking the same sources again give the same answer? Not when the collector binary
/// could not run, nor when a refusal may have come from it; a refusal is checked again, and
/// costs little: the validator remembers its verdicts.
fn is_settled(checked: &Checked) -> bool {
    match checked {
        Checked::Ready { condition, .. } => {
            condition.reason == reasons::VALIDATED.name
                || condition.reason == reasons::NOT_VALIDATED.name
        }
        Checked::Refused { .. } => false,
    }
}

pub async fn checked_plan(
    validator: Option<&CachedValidator>,
    sources: &CollectorSources,
) -> Result<Checked> {
    let (plan, rendered) = match planned(sources, &Vetoes::new())? {
        Ok(planned) => planned,
        Err(refused) => return Ok(refused),
    };
    let Some(validator) = validator else {
        let condition = config_valid(
            Status::Unknown,
            reasons::NOT_VALIDATED,
            "rendered, but not checked: no collector binary is configured (--collector-binary)",
        );
        return Ok(ready(plan, rendered, condition));
    };
    let error = match validator.verdict(&plan, &rendered.hash).await {
        Verdict::Valid => {
            let message = format!("accepted by {}", validator.describe());
            return Ok(ready(
                plan,
                rendered,
                config_valid(Status::True, reasons::VALIDATED, message),
            ));
        }
        Verdict::Unchecked(why) => {
            let condition = config_valid(Status::Unknown, reasons::VALIDATOR_UNAVAILABLE, why);
            return Ok(ready(plan, rendered, condition));
        }
        Verdict::Rejected(error) => error,
    };
    let vetoes = blamed_tenants(validator, sources, &plan).await?;
    if vetoes.is_empty() {
        return Ok(rejected(error));
    }
    let (plan, rendered) = match planned(sources, &vetoes)? {
        Ok(planned) => planned,
        Err(refused) => return Ok(refused),
    };
    Ok(match validator.verdict(&plan, &rendered.hash).await {
        Verdict::Valid => {
            let left_out: Vec<&str> = vetoes.keys().map(String::as_str).collect();
            let message = format!(
                "accepted by {} after leaving out tenant(s) it rejects: {}",
                validator.describe(),
                left_out.join(", ")
            );
            ready(
                plan,
                rendered,
                config_valid(Status::True, reasons::VALIDATED, message),
            )
        }
        Verdict::Rejected(error) | Verdict::Unchecked(error) => rejected(error),
    })
}

/// Plans and renders with `vetoes` left out; a collector problem or an oversize result refuses.
fn planned(
    sources: &CollectorSources,
    vetoes: &Vetoes,
) -> Result<Result<(CollectorPlan, RenderedConfig), Checked>> {
    let plan = match plan_collector_with_vetoes(sources, vetoes) {
        Ok(plan) => plan,
        Err(problem) => {
            return Ok(Err(Checked::Refused {
                reason: problem.reason,
                message: problem.message,
            }));
        }
    };
    let rendered = render_collector_config(&plan)?;
    if let Some(message) = oversize(&rendered.yaml, &plan.secret_files) {
        return Ok(Err(Checked::Refused {
            reason: reasons::CONFIG_TOO_LARGE,
            message,
        }));
    }
    Ok(Ok((plan, rendered)))
}

/// The tenants whose own additions (redaction, sampling) the collector rejects. A tenant is
/// blamed only when the collector accepts the configuration without any tenant's additions
/// and rejects it with this tenant's alone.
async fn blamed_tenants(
    validator: &CachedValidator,
    sources: &CollectorSources,
    plan: &CollectorPlan,
) -> Result<Vetoes> {
    let alone = |tenants: Vec<TenantSource>| sources.with_tenants(tenants);
    let mut vetoes = Vetoes::new();
    let Ok(baseline) = plan_collector(&alone(Vec::new())) else {
        return Ok(vetoes);
    };
    if validator.verdict_of(&baseline).await? != Verdict::Valid {
        return Ok(vetoes);
    }
    let suspects = plan.routed.iter().filter(|t| {
        !t.blocked_values.is_empty()
            || !t.blocked_key_patterns.is_empty()
            || t.sampling_percentage.is_some()
    });
    for routed in suspects {
        let Some(source) = sources
            .tenants
            .iter()
            .find(|s| s.spec.tenant_id == routed.tenant_id)
        else {
            continue;
        };
        let Ok(single) = plan_collector(&alone(vec![source.clone()])) else {
            continue;
        };
        if let Verdict::Rejected(own_error) = validator.verdict_of(&single).await? {
            let message = format!("the collector rejects this tenant's configuration: {own_error}");
            vetoes.insert(
                source.name.clone(),
                (reasons::CONFIG_REJECTED.name.to_owned(), message),
            );
        }
    }
    Ok(vetoes)
}

fn ready(plan: CollectorPlan, rendered: RenderedConfig, condition: Decided) -> Checked {
    Checked::Ready {
        plan: Box::new(plan),
        rendered,
        condition,
    }
}

fn rejected(message: String) -> Checked {
    Checked::Refused {
        reason: reasons::CONFIG_REJECTED,
        message,
    }
}

fn config_valid(status: Status, reason: Reason, message: impl Into<String>) -> Decided {
    Decided::new(CONFIG_VALID, status, reason, message)
}

/// Why the rendered objects cannot be stored, if they cannot.
pub fn oversize(
    config: &str,
    secret_files: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let secret_size: usize = secret_files.iter().map(|(k, v)| k.len() + v.len()).sum();
    if config.len() > MAX_OBJECT_DATA {
        Some(format!(
            "the rendered configuration is {} bytes, more than a ConfigMap holds ({MAX_OBJECT_DATA}); lower sharding.maxTenantsPerShard",
            config.len()
        ))
    } else if secret_size > MAX_OBJECT_DATA {
        Some(format!(
            "the collector's Secret would be {secret_size} bytes, more than a Secret holds ({MAX_OBJECT_DATA}); lower sharding.maxTenantsPerShard"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Rejects any plan routing a tenant whose redaction holds the value `REJECT`, as a
    /// collector rejects a pattern RE2 cannot compile; counts how often it runs.
    #[derive(Default)]
    struct Picky {
        runs: AtomicUsize,
    }

    impl ConfigValidator for Picky {
        fn validate<'a>(
            &'a self,
            plan: &'a CollectorPlan,
        ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'a>> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let bad = plan
                .routed
                .iter()
                .any(|t| t.blocked_values.iter().any(|v| v == "REJECT"));
            Box::pin(async move {
                if bad {
                    Verdict::Rejected("error parsing regexp".into())
                } else {
                    Verdict::Valid
                }
            })
        }

        fn describe(&self) -> String {
            "picky".into()
        }
    }

    fn tenant(name: &str, redaction: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "name": name, "created": "2026-11-02T10:00:01Z",
            "spec": { "tenantId": name, "regions": ["westeurope"], "redaction": redaction,
                      "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } } },
            "passwordHash": "$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWb",
            "connectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000001"
        })
    }

    fn sources() -> CollectorSources {
        serde_json::from_value(serde_json::json!({
            "spec": { "region": "westeurope" },
            "tenants": [
                tenant("acme", serde_json::json!({ "blockedValues": ["CUST-[0-9]+"] })),
                tenant("badregex", serde_json::json!({ "blockedValues": ["REJECT"] })),
                tenant("globex", serde_json::json!({})),
            ]
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_tenant_the_collector_rejects_is_left_out_and_the_others_roll_out() {
        let validator = CachedValidator::new(Arc::new(Picky::default()));
        let Checked::Ready {
            plan, condition, ..
        } = checked_plan(Some(&validator), &sources()).await.unwrap()
        else {
            panic!("the others must roll out");
        };
        let routed: Vec<&str> = plan.routed.iter().map(|t| t.tenant_id.as_str()).collect();
        assert_eq!(routed, ["acme", "globex"]);
        assert_eq!(plan.rejected[0].name, "badregex");
        assert_eq!(plan.rejected[0].reason, reasons::CONFIG_REJECTED.name);
        assert_eq!(condition.status, Status::True);
        assert!(
            condition.message.contains("badregex"),
            "{}",
            condition.message
        );
    }

    /// While a configuration stays rejected, reconciles must not start collector processes
    /// again: the baseline and single-tenant checks go through the verdict cache too.
    #[tokio::test]
    async fn finding_the_rejected_tenant_again_runs_no_collector() {
        let picky = Arc::new(Picky::default());
        let validator = CachedValidator::new(picky.clone());
        checked_plan(Some(&validator), &sources()).await.unwrap();
        let first = picky.runs.load(Ordering::SeqCst);
        assert!(
            first >= 3,
            "the full, baseline and suspect configs are checked: {first}"
        );
        checked_plan(Some(&validator), &sources()).await.unwrap();
        assert_eq!(
            picky.runs.load(Ordering::SeqCst),
            first,
            "every verdict was cached"
        );
    }

    /// A fresh validator for each call shows what was checked: a shard whose sources did
    /// not change is neither rendered nor checked again.
    #[tokio::test]
    async fn an_unchanged_shard_is_not_checked_again_and_a_changed_one_is() {
        let shards = CheckedShards::default();
        let runs = |picky: &Arc<Picky>| picky.runs.load(Ordering::SeqCst);
        let check = |picky: &Arc<Picky>, sources: CollectorSources| {
            let validator = CachedValidator::new(picky.clone());
            let shards = &shards;
            async move {
                shards
                    .checked(&("ns/eu".to_owned(), 0), Some(&validator), &sources)
                    .await
                    .unwrap()
            }
        };
        let first = Arc::new(Picky::default());
        let Checked::Ready { rendered, .. } = check(&first, sources()).await else {
            panic!("rolled out");
        };
        assert!(runs(&first) >= 1);

        let again = Arc::new(Picky::default());
        let Checked::Ready { rendered: same, .. } = check(&again, sources()).await else {
            panic!("rolled out");
        };
        assert_eq!(runs(&again), 0, "unchanged sources: nothing checked");
        assert_eq!(same.hash, rendered.hash);

        shards.retain(|(collector, shard)| collector == "ns/eu" && *shard != 0);
        let forgotten = Arc::new(Picky::default());
        check(&forgotten, sources()).await;
        assert!(runs(&forgotten) >= 1, "a removed shard starts afresh");

        let mut changed = sources();
        changed.tenants.truncate(1);
        let after = Arc::new(Picky::default());
        let Checked::Ready {
            rendered: other, ..
        } = check(&after, changed).await
        else {
            panic!("rolled out");
        };
        assert!(runs(&after) >= 1, "changed sources: checked again");
        assert_ne!(other.hash, rendered.hash);
    }

    #[tokio::test]
    async fn without_a_validator_the_config_rolls_out_unchecked() {
        let Checked::Ready { condition, .. } = checked_plan(None, &sources()).await.unwrap() else {
            panic!("rolled out unchecked");
        };
        assert_eq!(
            (condition.status, condition.reason.as_str()),
            (Status::Unknown, "NotValidated")
        );
    }

    #[test]
    fn oversize_configs_are_refused_with_advice() {
        let files = std::collections::BTreeMap::from([("htpasswd".to_owned(), String::new())]);
        assert_eq!(oversize("small", &files), None);
        let message = oversize(&"x".repeat(MAX_OBJECT_DATA + 1), &files).unwrap();
        assert!(message.contains("maxTenantsPerShard"), "{message}");
    }
}
