//! Reconciles a RegionalCollector: observe (its tenants, their Secrets, the Secrets its spec
//! names, its StatefulSet) → platform credential → plan, render and check (`check`) → apply
//! ConfigMap and Secret, then the StatefulSet carrying their hashes, then the Service → status.
//! What rolls the collector's pods is in `crate::controller::triggers`.

pub mod check;
pub mod decide;
pub mod observe;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use self::check::Checked;
use self::observe::ObservedCollector;
use super::conditions::{self, Decided};
use super::io::{apply, apply_status, publish_event};
use super::tenant::decide::{CredentialAction, credential};
use super::{Context, Error, Result, retry};
use crate::api::reasons::{self, Reason};
use crate::api::{RegionalCollector, RegionalCollectorStatus};
use crate::credentials::issue_credential;
use crate::pipeline::{CollectorPlan, RenderedConfig};
use crate::resources::collector as desired;

#[tracing::instrument(skip_all, fields(namespace = collector.namespace(), name = collector.name_any()))]
pub async fn reconcile(collector: Arc<RegionalCollector>, ctx: Arc<Context>) -> Result<Action> {
    super::measured(&ctx, "collector", reconcile_inner(collector, &ctx)).await
}

async fn reconcile_inner(collector: Arc<RegionalCollector>, ctx: &Context) -> Result<Action> {
    collector
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if collector.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // children go with it (garbage collection)
    }
    let mut observed = observe::observe(&collector, ctx).await?;
    let platform_hash = apply_platform_credential(&collector, ctx, &observed).await?;
    let live = observed.live.take();
    let sources = decide::sources(&collector, observed, platform_hash);
    match check::checked_plan(ctx.validator.as_ref(), &sources).await? {
        Checked::Refused { reason, message } => {
            refuse(&collector, ctx, reason, message, live.as_ref()).await?;
        }
        Checked::Ready {
            plan,
            rendered,
            condition,
        } => roll_out(&collector, ctx, *plan, rendered, condition).await?,
    }
    Ok(Action::requeue(ctx.settings.resync))
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
    apply(&ctx.client, &namespace_of(collector), &secret).await?;
    Ok(Some(hash))
}

/// Applies the checked configuration: config and secrets first, so pods never start on a
/// config whose files are missing; then the StatefulSet carrying both hashes; then the Service.
async fn roll_out(
    collector: &RegionalCollector,
    ctx: &Context,
    plan: CollectorPlan,
    rendered: RenderedConfig,
    config_valid: Decided,
) -> Result<()> {
    let namespace = namespace_of(collector);
    if let Some(message) = decide::memory_budget_warning(&plan) {
        tracing::warn!(%message, "queue memory budget exceeded");
        publish_event(
            &ctx.recorder,
            collector,
            reasons::QUEUE_MEMORY_BUDGET_EXCEEDED.name,
            message,
        )
        .await;
    }
    apply(
        &ctx.client,
        &namespace,
        &desired::config_map(collector, &rendered),
    )
    .await?;
    apply(
        &ctx.client,
        &namespace,
        &desired::secret(collector, &plan.secret_files),
    )
    .await?;
    let secret_hash = desired::secret_hash(&plan.secret_files);
    let image = &ctx.settings.collector_image;
    let stateful_set = desired::stateful_set(collector, &rendered.hash, &secret_hash, image);
    let workload = apply(&ctx.client, &namespace, &stateful_set).await?;
    apply(&ctx.client, &namespace, &desired::service(collector)).await?;
    announce_rollout(collector, ctx, &plan, &rendered).await;
    let available = decide::available(collector, Some(&workload));
    let status = decide::rolled_out_status(collector, plan, &rendered, &workload);
    write_status(collector, ctx, vec![config_valid, available], status).await
}

/// One `ConfigRendered` event per new configuration, even when the status cache lags behind.
async fn announce_rollout(
    collector: &RegionalCollector,
    ctx: &Context,
    plan: &CollectorPlan,
    rendered: &RenderedConfig,
) {
    let key = format!("{}/{}", namespace_of(collector), collector.name_any());
    if !decide::is_new_config(collector, rendered) || !ctx.rollouts.note(key, &rendered.hash) {
        return;
    }
    let (tenants, rejected) = (plan.routed.len(), plan.rejected.len());
    tracing::info!(config_hash = %rendered.hash, tenants, rejected, "rolled out collector configuration");
    let hash = rendered.hash.get(..12).unwrap_or(&rendered.hash);
    let note = format!("rendered configuration {hash} routing {tenants} tenant(s)");
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
    live: Option<&StatefulSet>,
) -> Result<()> {
    let (status, decided) = decide::refused_status(collector, reason, message, live);
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
    let previous = collector
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for condition in conditions::warnings(previous, &status.conditions) {
        let note = condition.message.clone();
        publish_event(&ctx.recorder, collector, &condition.reason, note).await;
    }
    apply_status(&ctx.client, collector, &status).await
}

fn namespace_of(collector: &RegionalCollector) -> String {
    collector.namespace().unwrap_or_default()
}

/// A failed reconcile runs again on the schedule of its failure class (`retry`).
pub fn error_policy(collector: Arc<RegionalCollector>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %collector.name_any(), namespace = ?collector.namespace(), kind = error.metric_label(), %error, "collector reconcile failed");
    Action::requeue(retry::after_error(error, &ctx.settings.provision_timings))
}
