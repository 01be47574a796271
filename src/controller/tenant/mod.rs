//! Reconciles a TelemetryTenant: observe (its Secrets, the source of its connection string, the
//! namespace's collectors) → decide (`decide`, pure) → apply (credential and connection string
//! Secrets, the App Insights component in Azure) → status.

pub mod decide;
pub mod observe;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};

use self::decide::{ConnectionAction, CredentialAction};
use self::observe::{CredentialSecret, ObservedTenant, stored_credential, verified_key};
use super::conditions::{self, Decided};
use super::io::{apply, apply_secret, apply_status, create, publish_event, read_secret};
use super::provision::{self, FINALIZER};
use super::{Context, Error, Result, retry};
use crate::api::reasons;
use crate::api::tenant::{DeletionPolicy, TenantEndpoint};
use crate::api::{TelemetryTenant, TelemetryTenantStatus};
use crate::credentials::issue_credential;
use crate::resources::tenant::{
    connection_string_secret, connection_string_secret_name, credentials_secret,
    credentials_secret_name,
};

#[tracing::instrument(skip_all, fields(namespace = tenant.namespace(), name = tenant.name_any()))]
pub async fn reconcile(tenant: Arc<TelemetryTenant>, ctx: Arc<Context>) -> Result<Action> {
    super::measured(&ctx, "tenant", reconcile_inner(tenant, ctx.clone())).await
}

async fn reconcile_inner(tenant: Arc<TelemetryTenant>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = tenant
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if !ctx.caches_ready().await {
        return Ok(Action::await_change()); // shutting down
    }
    // Only tenants with a provisioned component carry the finalizer (or still carry it from
    // when they had one): deleting the others needs nothing from telemux.
    let has_finalizer = tenant.finalizers().iter().any(|f| f == FINALIZER);
    if tenant.spec.application_insights.provision.is_none() && !has_finalizer {
        return apply_tenant(tenant, &ctx).await;
    }
    let api: Api<TelemetryTenant> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply_tenant(tenant, &ctx).await,
            FinalizerEvent::Cleanup(tenant) => cleanup(tenant, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply_tenant(tenant: Arc<TelemetryTenant>, ctx: &Context) -> Result<Action> {
    if tenant.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // owned Secrets go with it (garbage collection)
    }
    let mut status = decide::base_status(&tenant);
    if let Some(problem) = decide::spec_problem(&tenant) {
        write_status(&tenant, ctx, decide::invalid_spec(&problem), status).await?;
        return Ok(Action::await_change()); // nothing to retry until the spec changes
    }
    let observed = observe::observe(&tenant, ctx).await?;
    let endpoints = decide::endpoints(&tenant, &observed.collectors, &observed.recorded_shards);
    // The two Secrets are independent: written at once, a new tenant waits on one round
    // trip to the API server instead of two.
    let (credentials, connection) = futures::future::join(
        apply_credential(&tenant, ctx, &observed, &endpoints),
        apply_connection(&tenant, ctx, &observed, &mut status),
    )
    .await;
    let (credentials, (connection, requeue)) = (credentials?, connection?);
    status.endpoints = endpoints;
    status.credentials_secret = Some(credentials_secret_name(&tenant));
    // A previously resolved connection string stays in use (and listed) while the source is broken.
    if connection.is_true() || observed.connection_secret_present {
        status.connection_string_secret = Some(connection_string_secret_name(&tenant));
    }
    let (routed, routed_by) = decide::routed(&tenant, &observed.collectors);
    status.collectors = routed_by;
    write_status(&tenant, ctx, vec![credentials, connection, routed], status).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Writes the ingestion credential Secret, issuing a credential when the stored one is not intact.
async fn apply_credential(
    tenant: &TelemetryTenant,
    ctx: &Context,
    observed: &ObservedTenant,
    endpoints: &[TenantEndpoint],
) -> Result<Decided> {
    let name = credentials_secret_name(tenant);
    let (live, stored) = match &observed.credential_secret {
        CredentialSecret::Read(live) => (live.clone(), observed.credential.clone()),
        CredentialSecret::NotCached => {
            // A new tenant, as far as the cache knows: issue by creating the Secret, which the
            // API server refuses when it exists after all (written moments ago). Without
            // endpoints: those are applied (and owned) by the next reconcile's apply.
            let issued = issue_credential()?;
            let secret = credentials_secret(tenant, &issued.password, &issued.bcrypt_hash, &[]);
            if create(&ctx.client, &secret).await? {
                announce_issued(tenant, ctx, &name).await;
                return Ok(decide::credentials_condition(tenant, &name));
            }
            let live = read_secret(&ctx.client, &namespace_of(tenant), &name)
                .await?
                .map(Arc::new);
            let stored = live.as_deref().map(stored_credential).unwrap_or_default();
            (live, stored)
        }
    };
    let secret = match decide::credential(&stored, Some(&tenant.spec.tenant_id)) {
        CredentialAction::Keep { password, hash } => {
            credentials_secret(tenant, &password, &hash, endpoints)
        }
        CredentialAction::Issue => {
            let issued = issue_credential()?;
            let secret =
                credentials_secret(tenant, &issued.password, &issued.bcrypt_hash, endpoints);
            apply(&ctx.client, &namespace_of(tenant), &secret).await?;
            announce_issued(tenant, ctx, &name).await;
            return Ok(decide::credentials_condition(tenant, &name));
        }
    };
    apply_secret(&ctx.client, live.as_deref(), &secret).await?;
    Ok(decide::credentials_condition(tenant, &name))
}

async fn announce_issued(tenant: &TelemetryTenant, ctx: &Context, name: &str) {
    let note = format!("issued ingestion credential in Secret {name}");
    publish_event(&ctx.recorder, tenant, reasons::CREDENTIAL_ISSUED.name, note).await;
    tracing::info!(secret = %name, "issued ingestion credential");
}

/// Resolves the connection string (the user's Secret, or Azure) and writes the tenant's copy.
/// Returns its condition and when to look again.
async fn apply_connection(
    tenant: &TelemetryTenant,
    ctx: &Context,
    observed: &ObservedTenant,
    status: &mut TelemetryTenantStatus,
) -> Result<(Decided, Option<Duration>)> {
    let settings = &ctx.settings;
    match decide::connection(
        &observed.source,
        &settings.provision_timings,
        settings.resync,
    ) {
        ConnectionAction::Copy {
            connection_string,
            condition,
        } => {
            let secret = connection_string_secret(tenant, &connection_string);
            apply_secret(&ctx.client, observed.connection_secret.as_deref(), &secret).await?;
            Ok((condition, Some(settings.resync)))
        }
        ConnectionAction::Report { condition, requeue } => Ok((condition, requeue)),
        ConnectionAction::Provision => provision_component(tenant, ctx, status).await,
    }
}

/// Brings the tenant's component to its spec in Azure and writes its connection string.
async fn provision_component(
    tenant: &TelemetryTenant,
    ctx: &Context,
    status: &mut TelemetryTenantStatus,
) -> Result<(Decided, Option<Duration>)> {
    let timings = &ctx.settings.provision_timings;
    let (Some(azure), Some(spec)) = (
        &ctx.settings.azure,
        &tenant.spec.application_insights.provision,
    ) else {
        return Ok(decide::without_azure(timings)); // observed a moment ago; gone since
    };
    let id = provision::component_id(tenant, spec);
    let outcome = provision::ensure_component(azure.0.as_ref(), tenant, spec).await;
    if let Err(error) = &outcome {
        tracing::info!(component = %id.resource_id(), %error, "Application Insights not ready");
    }
    let secret_name = connection_string_secret_name(tenant);
    let verdict = decide::provisioned(&outcome, &id.resource_id(), &secret_name, timings);
    if let Some(connection_string) = &verdict.connection_string {
        let secret = connection_string_secret(tenant, connection_string);
        apply(&ctx.client, &namespace_of(tenant), &secret).await?;
        let generation = tenant.metadata.generation.unwrap_or_default();
        ctx.verified_components
            .record(verified_key(tenant), generation);
    }
    if verdict.resource_id.is_some() {
        status.application_insights_resource_id = verdict.resource_id;
    }
    Ok((verdict.condition, verdict.requeue))
}

/// Writes the status when it changed, announcing conditions that now ask for action.
async fn write_status(
    tenant: &TelemetryTenant,
    ctx: &Context,
    decided: Vec<Decided>,
    status: TelemetryTenantStatus,
) -> Result<()> {
    let Some(status) = decide::status(tenant, decided, status) else {
        return Ok(());
    };
    let key = format!("tenant/{}/{}", namespace_of(tenant), tenant.name_any());
    let version = tenant.metadata.resource_version.clone().unwrap_or_default();
    let fingerprint = conditions::fingerprint(&status);
    if ctx.sent_statuses.already_sent(&key, &version, fingerprint) {
        return Ok(()); // written moments ago; the cache has not caught up
    }
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for condition in conditions::warnings(previous, &status.conditions) {
        tracing::info!(condition = %condition.type_, reason = %condition.reason, message = %condition.message, "tenant not ready");
        let note = format!("{}: {}", condition.type_, condition.message);
        publish_event(&ctx.recorder, tenant, &condition.reason, note).await;
    }
    apply_status(&ctx.client, tenant, &status).await?;
    ctx.sent_statuses.record(key, version, fingerprint);
    Ok(())
}

/// The tenant is being deleted: apply its component's deletion policy. Failing here keeps the
/// finalizer, and `error_policy` retries on Azure's schedule.
async fn cleanup(tenant: Arc<TelemetryTenant>, ctx: &Context) -> Result<Action> {
    let Some(spec) = &tenant.spec.application_insights.provision else {
        return Ok(Action::await_change());
    };
    let id = provision::component_id(&tenant, spec).resource_id();
    let (reason, note) = match (spec.deletion_policy, &ctx.settings.azure) {
        (DeletionPolicy::Retain, _) => (
            reasons::APPLICATION_INSIGHTS_RETAINED,
            format!("deletionPolicy Retain: component {id} is kept"),
        ),
        (DeletionPolicy::Delete, None) => {
            let note = "deletionPolicy Delete, but no Azure credential is configured: the finalizer stays until one is";
            publish_event(
                &ctx.recorder,
                &*tenant,
                reasons::AUTHENTICATION_FAILED.name,
                note.to_owned(),
            )
            .await;
            return Ok(Action::requeue(ctx.settings.provision_timings.slow));
        }
        (DeletionPolicy::Delete, Some(azure)) => {
            if let Err(error) = azure
                .0
                .delete(&provision::component_id(&tenant, spec))
                .await
            {
                let note = format!("deleting component {id}: {error}");
                publish_event(
                    &ctx.recorder,
                    &*tenant,
                    reasons::APPLICATION_INSIGHTS_DELETE_FAILED.name,
                    note,
                )
                .await;
                return Err(error.into());
            }
            tracing::info!(component = %id, "deleted Application Insights component");
            (
                reasons::APPLICATION_INSIGHTS_DELETED,
                format!("deletionPolicy Delete: component {id} deleted"),
            )
        }
    };
    publish_event(&ctx.recorder, &*tenant, reason.name, note).await;
    ctx.verified_components.forget(&verified_key(&tenant));
    Ok(Action::await_change())
}

fn namespace_of(tenant: &TelemetryTenant) -> String {
    tenant.namespace().unwrap_or_default()
}

/// A failed reconcile runs again on the schedule of its failure class (`retry`).
pub fn error_policy(tenant: Arc<TelemetryTenant>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %tenant.name_any(), namespace = ?tenant.namespace(), kind = error.metric_label(), %error, "tenant reconcile failed");
    Action::requeue(retry::after_error(error, &ctx.settings.provision_timings))
}
