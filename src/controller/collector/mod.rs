//! Reconciles a RegionalCollector: gather its tenants → plan and render (pure) → ConfigMap and
//! Secret → StatefulSet carrying their hashes → Service → status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::conditions::{Decided, Status, merge, ready};
use super::{
    Context, Error, Result, SecretLookup, apply, apply_status, read_secret_key, secret_value,
};
use crate::api::condition_types::{AVAILABLE, CONFIG_VALID};
use crate::api::{RegionalCollector, RegionalCollectorStatus};
use crate::credentials::{is_bcrypt_hash, issue_credential, verify_password};
use crate::pipeline::{
    CollectorPlan, CollectorSources, RenderedConfig, TenantSource, Vetoes, plan_collector,
    plan_collector_with_vetoes, render_collector_config,
};
use crate::resources::collector as desired;
use crate::resources::tenant::{
    BCRYPT_KEY, CONNECTION_STRING_KEY, PASSWORD_KEY, connection_string_secret_name,
    credentials_secret_name,
};
use crate::validator::Verdict;

pub mod reason {
    pub const READY: &str = "Ready";
    pub const NOT_VALIDATED: &str = "NotValidated";
    pub const AVAILABLE: &str = "MinimumReplicasAvailable";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub const CONFIG_TOO_LARGE: &str = "ConfigTooLarge";
    pub const CONFIG_REJECTED: &str = "ConfigRejected";
    pub const VALIDATED: &str = "Validated";
    pub const VALIDATOR_UNAVAILABLE: &str = "ValidatorUnavailable";
}

/// ConfigMaps and Secrets hold at most 1 MiB of data; leave room for metadata.
const MAX_OBJECT_DATA: usize = 1_000_000;

/// Why the rendered objects cannot be stored, if they cannot.
fn oversize(
    config: &str,
    secret_files: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let secret_size: usize = secret_files.iter().map(|(k, v)| k.len() + v.len()).sum();
    if config.len() > MAX_OBJECT_DATA {
        Some(format!(
            "the rendered configuration is {} bytes, more than a ConfigMap holds ({MAX_OBJECT_DATA}); split the tenants over several RegionalCollectors (tenantSelector)",
            config.len()
        ))
    } else if secret_size > MAX_OBJECT_DATA {
        Some(format!(
            "the collector's Secret would be {secret_size} bytes, more than a Secret holds ({MAX_OBJECT_DATA}); split the tenants over several RegionalCollectors (tenantSelector)"
        ))
    } else {
        None
    }
}

/// The outcome of planning, rendering and checking a configuration.
enum Checked {
    Ready {
        plan: Box<CollectorPlan>,
        rendered: RenderedConfig,
        condition: Decided,
    },
    Refused {
        reason: &'static str,
        message: String,
    },
}

/// Plans and renders the collector's configuration and has it checked. When the collector
/// rejects it, tenants whose own additions it rejects are left out (and told), so one tenant
/// cannot stop a region.
async fn checked_plan(ctx: &Context, sources: &CollectorSources) -> Result<Checked> {
    let plan = match plan_collector(sources) {
        Ok(plan) => plan,
        Err(problem) => {
            return Ok(Checked::Refused {
                reason: problem.reason,
                message: problem.message,
            });
        }
    };
    let rendered = render_collector_config(&plan)?;
    if let Some(problem) = oversize(&rendered.yaml, &plan.secret_files) {
        return Ok(Checked::Refused {
            reason: reason::CONFIG_TOO_LARGE,
            message: problem,
        });
    }
    let Some(validator) = ctx.validator.as_deref() else {
        let condition = Decided::new(
            CONFIG_VALID,
            Status::Unknown,
            reason::NOT_VALIDATED,
            "rendered, but not checked: no collector binary is configured (--collector-binary)",
        );
        return Ok(Checked::Ready {
            plan: Box::new(plan),
            rendered,
            condition,
        });
    };
    let error = match ctx.verdict(validator, &plan, &rendered.hash).await {
        Verdict::Valid => {
            let condition = Decided::new(
                CONFIG_VALID,
                Status::True,
                reason::VALIDATED,
                format!("accepted by {}", validator.describe()),
            );
            return Ok(Checked::Ready {
                plan: Box::new(plan),
                rendered,
                condition,
            });
        }
        Verdict::Unchecked(why) => {
            let condition = Decided::new(
                CONFIG_VALID,
                Status::Unknown,
                reason::VALIDATOR_UNAVAILABLE,
                why,
            );
            return Ok(Checked::Ready {
                plan: Box::new(plan),
                rendered,
                condition,
            });
        }
        Verdict::Rejected(error) => error,
    };

    // Blame a tenant only when the collector accepts the configuration without its additions.
    let alone = |tenants: Vec<TenantSource>| CollectorSources {
        spec: sources.spec.clone(),
        platform_password_hash: sources.platform_password_hash.clone(),
        platform_connection_string: sources.platform_connection_string.clone(),
        blob_connection_string: sources.blob_connection_string.clone(),
        tenants,
    };
    let refused = |message: String| {
        Ok(Checked::Refused {
            reason: reason::CONFIG_REJECTED,
            message,
        })
    };
    let baseline = plan_collector(&alone(Vec::new())).map_err(|_| ());
    if !matches!(baseline, Ok(ref p) if validator.validate(p).await == Verdict::Valid) {
        return refused(error);
    }
    let mut vetoes = Vetoes::new();
    for routed in plan.routed.iter().filter(|t| {
        !t.blocked_values.is_empty()
            || !t.blocked_key_patterns.is_empty()
            || t.sampling_percentage.is_some()
    }) {
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
        if let Verdict::Rejected(own_error) = validator.validate(&single).await {
            vetoes.insert(
                source.name.clone(),
                (
                    reason::CONFIG_REJECTED.to_owned(),
                    format!("the collector rejects this tenant's configuration: {own_error}"),
                ),
            );
        }
    }
    if vetoes.is_empty() {
        return refused(error);
    }
    let plan = match plan_collector_with_vetoes(sources, &vetoes) {
        Ok(plan) => plan,
        Err(problem) => {
            return Ok(Checked::Refused {
                reason: problem.reason,
                message: problem.message,
            });
        }
    };
    let rendered = render_collector_config(&plan)?;
    match ctx.verdict(validator, &plan, &rendered.hash).await {
        Verdict::Valid => {
            let left_out: Vec<&str> = vetoes.keys().map(String::as_str).collect();
            let condition = Decided::new(
                CONFIG_VALID,
                Status::True,
                reason::VALIDATED,
                format!(
                    "accepted by {} after leaving out tenant(s) it rejects: {}",
                    validator.describe(),
                    left_out.join(", ")
                ),
            );
            Ok(Checked::Ready {
                plan: Box::new(plan),
                rendered,
                condition,
            })
        }
        Verdict::Rejected(error) | Verdict::Unchecked(error) => refused(error),
    }
}

/// Nothing new can be rolled out: keep what is live and say why.
async fn refuse_rollout(
    collector: &RegionalCollector,
    ctx: &Context,
    namespace: &str,
    reason: &str,
    message: String,
) -> Result<Action> {
    let mut status = collector.status.clone().unwrap_or_default();
    status.observed_generation = collector.metadata.generation;
    let live = live_workload(ctx, collector, namespace).await?;
    let decided = vec![
        Decided::new(CONFIG_VALID, Status::False, reason, message),
        available_condition(collector, live.as_ref()),
    ];
    finish(collector, ctx, decided, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// The collector's current StatefulSet, if any.
async fn live_workload(
    ctx: &Context,
    collector: &RegionalCollector,
    namespace: &str,
) -> Result<Option<StatefulSet>> {
    Ok(
        Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&desired::workload_name(collector))
            .await?,
    )
}

#[tracing::instrument(skip_all, fields(namespace = collector.namespace(), name = collector.name_any()))]
pub async fn reconcile(collector: Arc<RegionalCollector>, ctx: Arc<Context>) -> Result<Action> {
    super::measured(&ctx, "collector", reconcile_inner(collector, ctx.clone())).await
}

async fn reconcile_inner(collector: Arc<RegionalCollector>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = collector
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if collector.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let sources = gather_sources(&collector, &ctx, &namespace).await?;
    let (plan, rendered, config_valid) = match checked_plan(&ctx, &sources).await? {
        Checked::Refused { reason, message } => {
            return refuse_rollout(&collector, &ctx, &namespace, reason, message).await;
        }
        Checked::Ready {
            plan,
            rendered,
            condition,
        } => (*plan, rendered, condition),
    };

    let budget = crate::pipeline::render::plan_queue_budget(&plan);
    if !budget.fits {
        // Rolled out all the same (refusing would stop every tenant of the region), but one
        // tenant's outage could now make memory_limiter refuse the others: say so.
        let message = format!(
            "the exporters' batches may hold {} MiB in memory, more than half of memory_limiter's soft limit ({} MiB): raise resources.limits.memory or serve fewer tenants per collector",
            budget.in_memory_bytes >> 20,
            budget.soft_limit_bytes >> 20
        );
        tracing::warn!(
            in_memory_bytes = budget.in_memory_bytes,
            soft_limit_bytes = budget.soft_limit_bytes,
            "queue memory budget exceeded"
        );
        ctx.event(
            &*collector,
            EventType::Warning,
            "QueueMemoryBudgetExceeded",
            message,
        )
        .await;
    }

    // Config and secrets first, so pods never start on a config whose files are missing.
    apply(
        &ctx.client,
        &namespace,
        &desired::config_map(&collector, &rendered),
    )
    .await?;
    apply(
        &ctx.client,
        &namespace,
        &desired::secret(&collector, &plan.secret_files),
    )
    .await?;
    let secret_hash = desired::secret_hash(&plan.secret_files);
    let workload = apply(
        &ctx.client,
        &namespace,
        &desired::stateful_set(
            &collector,
            &rendered.hash,
            &secret_hash,
            &ctx.settings.collector_image,
        ),
    )
    .await?;
    apply(&ctx.client, &namespace, &desired::service(&collector)).await?;

    let key = format!("{namespace}/{}", collector.name_any());
    let previous_hash = collector
        .status
        .as_ref()
        .and_then(|s| s.config_hash.as_deref());
    if previous_hash != Some(rendered.hash.as_str()) && ctx.note_rollout(key, &rendered.hash) {
        tracing::info!(config_hash = %rendered.hash, tenants = plan.routed.len(), rejected = plan.rejected.len(), "rolled out collector configuration");
        ctx.event(
            &*collector,
            EventType::Normal,
            "ConfigRendered",
            format!(
                "rendered configuration {} routing {} tenant(s)",
                &rendered.hash[..12],
                plan.routed.len()
            ),
        )
        .await;
    }
    let status = RegionalCollectorStatus {
        observed_generation: collector.metadata.generation,
        conditions: Vec::new(),
        config_hash: Some(rendered.hash.clone()),
        ready_replicas: workload
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        tenant_count: i32::try_from(plan.routed.len()).unwrap_or(i32::MAX),
        routed_tenants: plan.routed.iter().map(|t| t.tenant_id.clone()).collect(),
        excluded_tenants: plan.excluded,
        rejected_tenants: plan.rejected,
    };
    let decided = vec![
        config_valid,
        available_condition(&collector, Some(&workload)),
    ];
    finish(&collector, &ctx, decided, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// Reads everything the plan needs: the namespace's tenants (watch cache), their Secrets
/// (watch cache of telemux-managed Secrets) and the user Secrets the collector references.
async fn gather_sources(
    collector: &RegionalCollector,
    ctx: &Context,
    namespace: &str,
) -> Result<CollectorSources> {
    let spec = &collector.spec;
    let user_secret = |reference: &crate::api::SecretKeyRef| {
        let (client, ns) = (ctx.client.clone(), namespace.to_owned());
        let (name, key) = (reference.name.clone(), reference.key.clone());
        async move {
            Ok::<_, Error>(match read_secret_key(&client, &ns, &name, &key).await? {
                SecretLookup::Found(value) => Some(value),
                SecretLookup::SecretNotFound | SecretLookup::KeyNotFound => None,
            })
        }
    };
    let blob_connection_string = match &spec.regional_storage {
        Some(storage) => user_secret(&storage.azure_blob.connection_string_secret_ref).await?,
        None => None,
    };
    let (platform_password_hash, platform_connection_string) = match &spec.platform {
        Some(platform) => {
            let hash = ensure_platform_credential(collector, ctx, namespace).await?;
            let cs = match &platform.application_insights {
                Some(ai) => user_secret(&ai.connection_string_secret_ref).await?,
                None => None,
            };
            (Some(hash), cs)
        }
        None => (None, None),
    };
    let tenants = ctx
        .tenants
        .state()
        .into_iter()
        .filter(|t| {
            t.namespace().as_deref() == Some(namespace) && t.metadata.deletion_timestamp.is_none()
        })
        .map(|t| TenantSource {
            name: t.name_any(),
            created: t.metadata.creation_timestamp.clone(),
            labels: t.labels().clone(),
            spec: t.spec.clone(),
            password_hash: ctx.managed_secret_value(
                namespace,
                &credentials_secret_name(&t),
                BCRYPT_KEY,
            ),
            connection_string: ctx.managed_secret_value(
                namespace,
                &connection_string_secret_name(&t),
                CONNECTION_STRING_KEY,
            ),
        })
        .collect();
    Ok(CollectorSources {
        spec: spec.clone(),
        platform_password_hash,
        platform_connection_string,
        blob_connection_string,
        tenants,
    })
}

/// Issues the platform credential once and returns its bcrypt hash.
async fn ensure_platform_credential(
    collector: &RegionalCollector,
    ctx: &Context,
    namespace: &str,
) -> Result<String> {
    let name = desired::platform_credentials_secret_name(collector);
    let current: Option<Secret> = Api::namespaced(ctx.client.clone(), namespace)
        .get_opt(&name)
        .await?;
    let value = |key| current.as_ref().and_then(|s| secret_value(s, key));
    let (password, hash) = match (value(PASSWORD_KEY), value(BCRYPT_KEY)) {
        (Some(p), Some(h)) if is_bcrypt_hash(&h) && verify_password(&p, &h) => (p, h),
        _ => {
            let issued = issue_credential()?;
            ctx.event(
                collector,
                EventType::Normal,
                "CredentialIssued",
                format!("issued platform credential in Secret {name}"),
            )
            .await;
            (issued.password, issued.bcrypt_hash)
        }
    };
    apply(
        &ctx.client,
        namespace,
        &desired::platform_credentials_secret(collector, &password, &hash),
    )
    .await?;
    Ok(hash)
}

fn available_condition(collector: &RegionalCollector, workload: Option<&StatefulSet>) -> Decided {
    let want = collector.spec.replicas;
    let Some(workload) = workload else {
        return Decided::new(
            AVAILABLE,
            Status::Unknown,
            "NotRolledOut",
            "no configuration has been rolled out",
        );
    };
    let status = workload.status.clone().unwrap_or_default();
    // A rolling update is over when the revision every pod runs is the one wanted.
    let current = status.observed_generation >= workload.metadata.generation
        && status.current_revision == status.update_revision;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas;
    if want == 0 {
        Decided::new(
            AVAILABLE,
            Status::True,
            reason::SCALED_TO_ZERO,
            "replicas is 0",
        )
    } else if current && updated == want && available == want && total == want {
        Decided::new(
            AVAILABLE,
            Status::True,
            reason::AVAILABLE,
            format!("{available}/{want} collector pods available"),
        )
    } else {
        Decided::new(
            AVAILABLE,
            Status::False,
            reason::ROLLING_OUT,
            format!("{available}/{want} collector pods available, {updated} up to date"),
        )
    }
}

async fn finish(
    collector: &RegionalCollector,
    ctx: &Context,
    mut decided: Vec<Decided>,
    mut status: RegionalCollectorStatus,
) -> Result<()> {
    // Unknown validity (no validator) does not block readiness; a rejected config does.
    let blocking: Vec<Decided> = decided
        .iter()
        .filter(|d| d.status != Status::Unknown)
        .cloned()
        .collect();
    decided.push(ready(
        &blocking,
        reason::READY,
        "the collector serves its tenants",
    ));
    let previous = collector
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    status.conditions = merge(&previous, decided, collector.metadata.generation);
    if collector.status.as_ref() == Some(&status) {
        return Ok(());
    }
    for condition in &status.conditions {
        if condition.status == "False"
            && condition.type_ == CONFIG_VALID
            && super::conditions::transitioned(&previous, condition)
        {
            ctx.event(
                collector,
                EventType::Warning,
                &condition.reason,
                condition.message.clone(),
            )
            .await;
        }
    }
    apply_status(&ctx.client, collector, &status).await
}

pub fn error_policy(
    collector: Arc<RegionalCollector>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(name = %collector.name_any(), namespace = ?collector.namespace(), kind = error.metric_label(), %error, "collector reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    #[test]
    fn oversize_configs_are_refused_with_advice() {
        let files = std::collections::BTreeMap::from([("htpasswd".to_owned(), String::new())]);
        assert_eq!(super::oversize("small", &files), None);
        let message = super::oversize(&"x".repeat(super::MAX_OBJECT_DATA + 1), &files).unwrap();
        assert!(message.contains("tenantSelector"), "{message}");
    }
}
