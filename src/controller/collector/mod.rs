//! Reconciles a RegionalCollector: observe (its tenants, their Secrets and recorded shards, the
//! Secrets its spec names, its StatefulSets) → platform credential → plan the region and assign
//! shards (`crate::pipeline::shards`), recording new assignments first → per shard: plan,
//! render and check (`check`; skipped while the shard's sources are unchanged), then apply
//! ConfigMap and Secret, the StatefulSet carrying their hashes, the Service and the
//! PodDisruptionBudget → remove emptied shards → status. What rolls a shard's pods is in
//! `crate::controller::triggers`.

pub mod check;
pub mod decide;
pub mod observe;

use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use self::check::{Checked, ShardKey};
use self::observe::ObservedCollector;
use super::conditions::Status;
use super::conditions::{self, Decided};
use super::context::ChildStores;
use super::io::{apply, apply_child, apply_secret, apply_status, publish_event};
use super::tenant::decide::{CredentialAction, credential};
use super::{Context, Error, Result, retry};
use crate::api::condition_types::CONFIG_VALID;
use crate::api::reasons::{self, Reason};
use crate::api::{RegionalCollector, RegionalCollectorStatus};
use crate::credentials::issue_credential;
use crate::pipeline::shards::{self, ShardIndex};
use crate::pipeline::{CollectorPlan, CollectorSources, RenderedConfig, plan_collector};
use crate::resources::collector as desired;

/// Shards checked and applied at once: enough to overlap a collector `validate` with the API
/// server's answers, few enough not to crowd a small node's cores.
const SHARD_CONCURRENCY: usize = 4;

#[tracing::instrument(skip_all, fields(namespace = collector.namespace(), name = collector.name_any()))]
pub async fn reconcile(collector: Arc<RegionalCollector>, ctx: Arc<Context>) -> Result<Action> {
    let key = pacing_key(&collector);
    let result = super::measured(&ctx, "collector", reconcile_inner(collector, &ctx)).await;
    ctx.collector_pacing.finished(&key);
    result
}

fn pacing_key(collector: &RegionalCollector) -> String {
    format!("{}/{}", namespace_of(collector), collector.name_any())
}

async fn reconcile_inner(collector: Arc<RegionalCollector>, ctx: &Context) -> Result<Action> {
    collector
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if collector.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // children go with it (garbage collection)
    }
    if !ctx.caches_ready().await {
        return Ok(Action::await_change()); // shutting down
    }
    if let Some(wait) = ctx
        .collector_pacing
        .wait(&pacing_key(&collector), ctx.settings.collector_debounce)
    {
        return Ok(Action::requeue(wait)); // what triggered this is picked up then
    }
    let mut observed = observe::observe(&collector, ctx).await?;
    let platform_hash = apply_platform_credential(&collector, ctx, &observed).await?;
    let live = std::mem::take(&mut observed.live);
    let autoscaled = std::mem::take(&mut observed.autoscaled);
    let mut recorded = std::mem::take(&mut observed.recorded_shards);
    ctx.unseen_assignments.fill(&collector, &mut recorded);
    let sources = decide::sources(&collector, observed, platform_hash);
    let whole = match plan_collector(&sources) {
        Ok(plan) => plan,
        Err(problem) => {
            refuse(&collector, ctx, problem.reason, problem.message, &live).await?;
            return Ok(Action::requeue(ctx.settings.resync));
        }
    };
    let members = decide::members(&sources, &whole);
    let max = collector.spec.sharding.max_tenants_per_shard;
    let assignment = shards::assign(&recorded, &members, max);
    // Recorded before any shard serves them, so a restart can never move them.
    write_records(&collector, ctx, &recorded, &sources, &assignment.new).await?;
    // Shards are independent: checked and applied a few at a time, so a burst that changes
    // dozens of them waits on the collector binary and the API server in parallel.
    let by_shard = decide::sources_by_shard(&sources, &assignment.shards);
    let work: Vec<_> = by_shard
        .iter()
        .map(|(index, sources)| shard(&collector, ctx, sources, &live, *index))
        .collect();
    let outcomes: BTreeMap<ShardIndex, decide::ShardOutcome> = futures::stream::iter(work)
        .buffer_unordered(SHARD_CONCURRENCY)
        .try_collect()
        .await?;
    forget_checks_of_gone_shards(&collector, ctx, &assignment.shards);
    let gone = live.keys().filter(|i| !assignment.shards.contains_key(i));
    remove_shards(&collector, ctx, gone.copied().collect()).await?;
    // Autoscalers of removed shards, and all of them once autoscaling is switched off.
    let unwanted = autoscaled
        .iter()
        .filter(|i| collector.spec.autoscaling.is_none() || !assignment.shards.contains_key(i));
    for index in unwanted {
        let name = desired::workload_name(&collector, *index);
        delete::<HorizontalPodAutoscaler>(ctx, &namespace_of(&collector), &name).await?;
    }
    let (status, decided) = decide::sharded_status(&collector, &whole, &outcomes);
    write_status(&collector, ctx, decided, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// Plans, renders and checks one shard's configuration (unless its sources are unchanged
/// since the last time), then rolls it out.
async fn shard(
    collector: &RegionalCollector,
    ctx: &Context,
    sources: &CollectorSources,
    live: &BTreeMap<ShardIndex, StatefulSet>,
    index: ShardIndex,
) -> Result<(ShardIndex, decide::ShardOutcome)> {
    let key = shard_key(collector, index);
    let checked = ctx
        .checked_shards
        .checked(&key, ctx.validator.as_ref(), sources)
        .await?;
    let members = sources.tenants.len();
    let outcome = apply_shard(collector, ctx, index, members, checked, live).await?;
    Ok((index, outcome))
}

/// A shard of a collector, for the memos that remember it.
fn shard_key(collector: &RegionalCollector, index: ShardIndex) -> ShardKey {
    (pacing_key(collector), index)
}

/// Keeps the checked configurations of shards that still exist: this collector's current
/// ones, and those of the other collectors the cache still holds (a deleted collector is not
/// reconciled again, so its shards are forgotten here).
fn forget_checks_of_gone_shards(
    collector: &RegionalCollector,
    ctx: &Context,
    shards: &BTreeMap<ShardIndex, Vec<String>>,
) {
    let this = pacing_key(collector);
    let collectors: BTreeSet<String> = ctx
        .collectors
        .state()
        .iter()
        .map(|c| pacing_key(c))
        .collect();
    ctx.checked_shards.retain(|(key, index)| {
        if *key == this {
            shards.contains_key(index)
        } else {
            collectors.contains(key)
        }
    });
}

/// Rolls out a shard's checked configuration, or keeps what it runs when it was refused.
async fn apply_shard(
    collector: &RegionalCollector,
    ctx: &Context,
    index: ShardIndex,
    members: usize,
    checked: Checked,
    live: &BTreeMap<ShardIndex, StatefulSet>,
) -> Result<decide::ShardOutcome> {
    Ok(match checked {
        Checked::Ready {
            plan,
            rendered,
            condition,
        } => {
            let workload =
                roll_out(collector, ctx, index, &plan, &rendered, live.get(&index)).await?;
            decide::ShardOutcome {
                members,
                config_valid: condition,
                plan: Some(*plan),
                config_hash: Some(rendered.hash),
                workload: Some(workload),
            }
        }
        Checked::Refused { reason, message } => decide::ShardOutcome {
            members,
            config_valid: Decided::new(CONFIG_VALID, Status::False, reason, message),
            plan: None,
            config_hash: live_config_hash(collector, index),
            workload: live.get(&index).cloned(),
        },
    })
}

/// The configuration a shard runs, from the last status.
fn live_config_hash(collector: &RegionalCollector, index: ShardIndex) -> Option<String> {
    let status = collector.status.as_ref()?;
    status
        .shards
        .iter()
        .find(|s| s.index == index)
        .and_then(|s| s.config_hash.clone())
}

/// Brings the shard records to what `shards::records` wants: every tenant recorded before
/// and still there, and the newly assigned. One write per changed shard, however many
/// tenants it gained.
async fn write_records(
    collector: &RegionalCollector,
    ctx: &Context,
    recorded: &BTreeMap<String, ShardIndex>,
    sources: &CollectorSources,
    new: &BTreeMap<String, ShardIndex>,
) -> Result<()> {
    let namespace = namespace_of(collector);
    let existing: BTreeSet<&str> = sources.tenants.iter().map(|t| t.name.as_str()).collect();
    let mut wanted = shards::records(recorded, &existing, new);
    let stored = ctx.shard_records.state();
    let stored = stored
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
        .map(|r| &**r);
    let stored = desired::shard_record_contents(stored, &collector.name_any());
    for index in stored
        .keys()
        .chain(wanted.keys())
        .copied()
        .collect::<BTreeSet<_>>()
    {
        let tenants = wanted.remove(&index).unwrap_or_default();
        if stored.get(&index) == Some(&tenants) {
            continue;
        }
        if tenants.is_empty() {
            delete::<ConfigMap>(
                ctx,
                &namespace,
                &desired::shard_record_name(collector, index),
            )
            .await?;
            continue;
        }
        apply(
            &ctx.client,
            &namespace,
            &desired::shard_record(collector, index, &tenants),
        )
        .await?;
        for (tenant, _) in new.iter().filter(|(_, shard)| **shard == index) {
            ctx.unseen_assignments.note(collector, tenant, index);
            tracing::info!(tenant, shard = index, "assigned tenant to shard");
        }
    }
    Ok(())
}

/// Deletes the objects of shards left without tenants; the StatefulSet last, so a deletion cut
/// short is finished by the next reconcile, which still finds it.
async fn remove_shards(
    collector: &RegionalCollector,
    ctx: &Context,
    gone: Vec<ShardIndex>,
) -> Result<()> {
    let namespace = namespace_of(collector);
    for index in gone {
        tracing::info!(shard = index, "removing empty shard");
        let workload = desired::workload_name(collector, index);
        delete::<ConfigMap>(ctx, &namespace, &desired::config_map_name(collector, index)).await?;
        delete::<Secret>(ctx, &namespace, &desired::secret_name(collector, index)).await?;
        delete::<Service>(ctx, &namespace, &workload).await?;
        delete::<PodDisruptionBudget>(ctx, &namespace, &workload).await?;
        delete::<StatefulSet>(ctx, &namespace, &workload).await?;
    }
    Ok(())
}

/// Deletes an object; one already gone is fine.
async fn delete<K>(ctx: &Context, namespace: &str, name: &str) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the platform credential Secret (issued once, kept while intact); returns its hash.
async fn apply_platform_credential(
    collector: &RegionalCollector,
    ctx: &Context,
    observed: &ObservedCollector,
) -> Result<Option<String>> {
    let Some(stored) = &observed.platform_credential else {
        return Ok(None);
    };
    let name = desired::platform_credentials_secret_name(collector);
    let (password, hash) = match credential(stored, None) {
        CredentialAction::Keep { password, hash } => (password, hash),
        CredentialAction::Issue => {
            let issued = issue_credential()?;
            let note = format!("issued platform credential in Secret {name}");
            publish_event(
                &ctx.recorder,
                collector,
                reasons::CREDENTIAL_ISSUED.name,
                note,
            )
            .await;
            (issued.password, issued.bcrypt_hash)
        }
    };
    let secret = desired::platform_credentials_secret(collector, &password, &hash);
    let cached = ctx.managed_secret(&namespace_of(collector), &name);
    apply_secret(&ctx.client, cached.as_deref(), &secret).await?;
    Ok(Some(hash))
}

/// Applies a shard's checked configuration: config and secrets first, so pods never start on a
/// config whose files are missing; then the StatefulSet carrying both hashes; then the Service
/// and the PodDisruptionBudget. Each is skipped when it is already as wanted (`apply_child`,
/// `apply_secret`): most shards of a region are unchanged by any one tenant.
async fn roll_out(
    collector: &RegionalCollector,
    ctx: &Context,
    shard: ShardIndex,
    plan: &CollectorPlan,
    rendered: &RenderedConfig,
    live: Option<&StatefulSet>,
) -> Result<StatefulSet> {
    let namespace = namespace_of(collector);
    if let Some(message) = decide::memory_budget_warning(plan) {
        tracing::warn!(%message, shard, "queue memory budget exceeded");
        publish_event(
            &ctx.recorder,
            collector,
            reasons::QUEUE_MEMORY_BUDGET_EXCEEDED.name,
            message,
        )
        .await;
    }
    let children = &ctx.children;
    let config_map = desired::config_map(collector, shard, rendered);
    let version = ChildStores::version(
        &children.config_maps,
        &namespace,
        &desired::config_map_name(collector, shard),
    );
    apply_child(ctx, &namespace, &config_map, version).await?;
    let secret = desired::secret(collector, shard, &plan.secret_files);
    let cached = ctx.managed_secret(&namespace, &desired::secret_name(collector, shard));
    apply_secret(&ctx.client, cached.as_deref(), &secret).await?;
    let secret_hash = desired::secret_hash(&plan.secret_files);
    let image = &ctx.settings.collector_image;
    let stateful_set = desired::stateful_set(collector, shard, &rendered.hash, &secret_hash, image);
    let version = live.and_then(|s| s.metadata.resource_version.clone());
    let workload = match apply_child(ctx, &namespace, &stateful_set, version).await? {
        Some(applied) => applied,
        // Skipped only when `live` showed the version last applied.
        None => live.cloned().ok_or(Error::MissingField("statefulset"))?,
    };
    let workload_name = desired::workload_name(collector, shard);
    let version = ChildStores::version(&children.services, &namespace, &workload_name);
    apply_child(
        ctx,
        &namespace,
        &desired::service(collector, shard),
        version,
    )
    .await?;
    let budget = desired::pod_disruption_budget(collector, shard);
    let version = ChildStores::version(&children.budgets, &namespace, &workload_name);
    apply_child(ctx, &namespace, &budget, version).await?;
    if let Some(autoscaler) = desired::horizontal_pod_autoscaler(collector, shard) {
        apply(&ctx.client, &namespace, &autoscaler).await?;
    }
    announce_rollout(collector, ctx, shard, plan, rendered).await;
    Ok(workload)
}

/// One `ConfigRendered` event per new configuration, even when the status cache lags behind.
async fn announce_rollout(
    collector: &RegionalCollector,
    ctx: &Context,
    shard: ShardIndex,
    plan: &CollectorPlan,
    rendered: &RenderedConfig,
) {
    let key = shard_key(collector, shard);
    if !decide::is_new_config(collector, shard, rendered) || !ctx.rollouts.note(key, &rendered.hash)
    {
        return;
    }
    let (tenants, rejected) = (plan.routed.len(), plan.rejected.len());
    tracing::info!(config_hash = %rendered.hash, shard, tenants, rejected, "rolled out collector configuration");
    let hash = rendered.hash.get(..12).unwrap_or(&rendered.hash);
    let note = format!("rendered configuration {hash} routing {tenants} tenant(s) (shard {shard})");
    publish_event(
        &ctx.recorder,
        collector,
        reasons::CONFIG_RENDERED.name,
        note,
    )
    .await;
}

/// Nothing new can be rolled out: keep what is live and say why.
async fn refuse(
    collector: &RegionalCollector,
    ctx: &Context,
    reason: Reason,
    message: String,
    live: &BTreeMap<ShardIndex, StatefulSet>,
) -> Result<()> {
    let (status, decided) =
        decide::refused_status(collector, reason, message, live.values().next());
    write_status(collector, ctx, decided, status).await
}

/// Writes the status when it changed, announcing conditions that now ask for action.
async fn write_status(
    collector: &RegionalCollector,
    ctx: &Context,
    decided: Vec<Decided>,
    status: RegionalCollectorStatus,
) -> Result<()> {
    let Some(status) = decide::status(collector, decided, status) else {
        return Ok(());
    };
    let key = format!(
        "collector/{}/{}",
        namespace_of(collector),
        collector.name_any()
    );
    let version = collector
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let fingerprint = conditions::fingerprint(&status);
    if ctx.sent_statuses.already_sent(&key, &version, fingerprint) {
        return Ok(()); // written moments ago; the cache has not caught up
    }
    let previous = collector
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for condition in conditions::warnings(previous, &status.conditions) {
        let note = condition.message.clone();
        publish_event(&ctx.recorder, collector, &condition.reason, note).await;
    }
    apply_status(&ctx.client, collector, &status).await?;
    ctx.sent_statuses.record(key, version, fingerprint);
    Ok(())
}

fn namespace_of(collector: &RegionalCollector) -> String {
    collector.namespace().unwrap_or_default()
}

/// A failed reconcile runs again on the schedule of its failure class (`retry`).
pub fn error_policy(collector: Arc<RegionalCollector>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %collector.name_any(), namespace = ?collector.namespace(), kind = error.metric_label(), %error, "collector reconcile failed");
    Action::requeue(retry::after_error(error, &ctx.settings.provision_timings))
}
