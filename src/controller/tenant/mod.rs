//! Reconciles a TelemetryTenant: validate → ingestion credential → connection string → status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};

use super::conditions::{Decided, Status, merge, ready, transitioned};
use super::provision::{self, Provisioned};
use super::{
    Context, Error, Result, SecretLookup, apply, apply_status, read_secret_key, secret_value,
};
use crate::api::condition_types::{APPLICATION_INSIGHTS_READY, CREDENTIALS_READY, ROUTED};
use crate::api::tenant::{DeletionPolicy, ProvisionSpec};
use crate::api::{TelemetryTenant, TelemetryTenantStatus};
use crate::connection_string::ConnectionString;
use crate::credentials::{is_bcrypt_hash, issue_credential, verify_password};
use crate::resources::tenant::{
    BCRYPT_KEY, CONNECTION_STRING_KEY, PASSWORD_KEY, USERNAME_KEY, connection_string_secret,
    connection_string_secret_name, credentials_secret, credentials_secret_name,
};

/// Reasons of the tenant's conditions.
pub mod reason {
    pub const READY: &str = "Ready";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ISSUED: &str = "Issued";
    pub const CONNECTION_STRING_RESOLVED: &str = "ConnectionStringResolved";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    pub const INVALID_CONNECTION_STRING: &str = "InvalidConnectionString";
    pub const ROUTED: &str = "Routed";
    pub const NO_COLLECTOR: &str = "NoCollectorInRegion";
    pub const PENDING: &str = "Pending";
}

#[tracing::instrument(skip_all, fields(namespace = tenant.namespace(), name = tenant.name_any()))]
pub async fn reconcile(tenant: Arc<TelemetryTenant>, ctx: Arc<Context>) -> Result<Action> {
    super::measured(&ctx, "tenant", reconcile_inner(tenant, ctx.clone())).await
}

async fn reconcile_inner(tenant: Arc<TelemetryTenant>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = tenant
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    // Only tenants with a provisioned component carry the finalizer (or still carry it from
    // when they had one): deleting the others needs nothing from telemux.
    let has_finalizer = tenant
        .finalizers()
        .iter()
        .any(|f| f == provision::FINALIZER);
    if tenant.spec.application_insights.provision.is_none() && !has_finalizer {
        return apply_tenant(tenant, ctx, namespace).await;
    }
    let api: Api<TelemetryTenant> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, provision::FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply_tenant(tenant, ctx.clone(), namespace).await,
            FinalizerEvent::Cleanup(tenant) => cleanup(tenant, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The tenant is being deleted: apply its component's deletion policy.
async fn cleanup(tenant: Arc<TelemetryTenant>, ctx: Arc<Context>) -> Result<Action> {
    let Some(provision) = &tenant.spec.application_insights.provision else {
        return Ok(Action::await_change());
    };
    let id = provision::component_id(&tenant, provision);
    match provision.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.event(
                &*tenant,
                EventType::Normal,
                "ApplicationInsightsRetained",
                format!(
                    "deletionPolicy Retain: component {} is kept",
                    id.resource_id()
                ),
            )
            .await;
        }
        DeletionPolicy::Delete => {
            let Some(azure) = &ctx.settings.azure else {
                ctx.event(
                    &*tenant,
                    EventType::Warning,
                    provision::reason::AUTHENTICATION_FAILED,
                    "deletionPolicy Delete, but no Azure credential is configured: the finalizer stays until one is".to_owned(),
                )
                .await;
                return Ok(Action::requeue(ctx.settings.provision_timings.slow));
            };
            if let Err(error) = azure.0.delete(&id).await {
                ctx.event(
                    &*tenant,
                    EventType::Warning,
                    "ApplicationInsightsDeleteFailed",
                    format!("deleting component {}: {error}", id.resource_id()),
                )
                .await;
                return Err(error.into());
            }
            tracing::info!(component = %id.resource_id(), "deleted Application Insights component");
            ctx.event(
                &*tenant,
                EventType::Normal,
                "ApplicationInsightsDeleted",
                format!(
                    "deletionPolicy Delete: component {} deleted",
                    id.resource_id()
                ),
            )
            .await;
        }
    }
    ctx.components_verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&verified_key(&tenant));
    Ok(Action::await_change())
}

fn verified_key(tenant: &TelemetryTenant) -> String {
    format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    )
}

async fn apply_tenant(
    tenant: Arc<TelemetryTenant>,
    ctx: Arc<Context>,
    namespace: String,
) -> Result<Action> {
    if tenant.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // owned Secrets go with it (garbage collection)
    }

    let mut decided = Vec::new();
    let mut status = TelemetryTenantStatus {
        observed_generation: tenant.metadata.generation,
        application_insights_resource_id: tenant
            .status
            .as_ref()
            .and_then(|s| s.application_insights_resource_id.clone()),
        ..TelemetryTenantStatus::default()
    };

    if let Err(problem) = crate::validation::validate_tenant_spec(&tenant.spec) {
        for type_ in [CREDENTIALS_READY, APPLICATION_INSIGHTS_READY, ROUTED] {
            decided.push(Decided::new(
                type_,
                Status::False,
                reason::INVALID_SPEC,
                problem.message.clone(),
            ));
        }
        finish(&tenant, &ctx, decided, status).await?;
        // Nothing to retry until the spec changes.
        return Ok(Action::await_change());
    }

    // Ingestion credential: issued once, kept as long as it stays intact.
    let creds_name = credentials_secret_name(&tenant);
    // Read from the API, not the watch cache: a lagging cache must never cause a re-issue.
    let current: Option<Secret> = Api::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&creds_name)
        .await?;
    let value = |key| current.as_ref().and_then(|s| secret_value(s, key));
    let (existing_user, existing_password, existing_hash) =
        (value(USERNAME_KEY), value(PASSWORD_KEY), value(BCRYPT_KEY));
    let intact = match (&existing_password, &existing_hash) {
        (Some(password), Some(hash)) => {
            existing_user.as_deref() == Some(tenant.spec.tenant_id.as_str())
                && is_bcrypt_hash(hash)
                && verify_password(password, hash)
        }
        _ => false,
    };
    let secret = match (intact, existing_password, existing_hash) {
        (true, Some(password), Some(hash)) => credentials_secret(&tenant, &password, &hash),
        _ => {
            let issued = issue_credential()?;
            tracing::info!(secret = %creds_name, "issued ingestion credential");
            ctx.event(
                &*tenant,
                EventType::Normal,
                "CredentialIssued",
                format!("issued ingestion credential in Secret {creds_name}"),
            )
            .await;
            credentials_secret(&tenant, &issued.password, &issued.bcrypt_hash)
        }
    };
    apply(&ctx.client, &namespace, &secret).await?;
    status.credentials_secret = Some(creds_name.clone());
    decided.push(Decided::new(
        CREDENTIALS_READY,
        Status::True,
        reason::ISSUED,
        format!(
            "clients authenticate as {:?} with the password in Secret {creds_name}",
            tenant.spec.tenant_id
        ),
    ));

    // Connection string.
    let ai = &tenant.spec.application_insights;
    let mut requeue = Some(ctx.settings.resync);
    let ai_condition = if let Some(existing) = &ai.existing {
        let reference = &existing.connection_string_secret_ref;
        match read_secret_key(&ctx.client, &namespace, &reference.name, &reference.key).await? {
            SecretLookup::SecretNotFound => Decided::new(
                APPLICATION_INSIGHTS_READY,
                Status::False,
                reason::SECRET_NOT_FOUND,
                format!(
                    "Secret {:?} (applicationInsights.existing.connectionStringSecretRef) does not exist",
                    reference.name
                ),
            ),
            SecretLookup::KeyNotFound => Decided::new(
                APPLICATION_INSIGHTS_READY,
                Status::False,
                reason::SECRET_KEY_NOT_FOUND,
                format!("Secret {:?} has no key {:?}", reference.name, reference.key),
            ),
            SecretLookup::Found(raw) => match ConnectionString::parse(&raw) {
                Err(problem) => Decided::new(
                    APPLICATION_INSIGHTS_READY,
                    Status::False,
                    reason::INVALID_CONNECTION_STRING,
                    format!(
                        "key {:?} of Secret {:?}: {problem}",
                        reference.key, reference.name
                    ),
                ),
                Ok(_) => {
                    apply(
                        &ctx.client,
                        &namespace,
                        &connection_string_secret(&tenant, &raw),
                    )
                    .await?;
                    Decided::new(
                        APPLICATION_INSIGHTS_READY,
                        Status::True,
                        reason::CONNECTION_STRING_RESOLVED,
                        format!(
                            "connection string from Secret {:?} key {:?}",
                            reference.name, reference.key
                        ),
                    )
                }
            },
        }
    } else if let Some(provision) = &ai.provision {
        let (condition, next) =
            provisioned_condition(&tenant, &ctx, provision, &mut status).await?;
        requeue = next;
        condition
    } else {
        unreachable_source()
    };
    // A previously resolved connection string stays in use (and listed) while the source is broken.
    if ai_condition.is_true()
        || ctx
            .managed_secret_value(
                &namespace,
                &connection_string_secret_name(&tenant),
                CONNECTION_STRING_KEY,
            )
            .is_some()
    {
        status.connection_string_secret = Some(connection_string_secret_name(&tenant));
    }
    decided.push(ai_condition);

    decided.push(routed_condition(&tenant, &ctx, &mut status));
    finish(&tenant, &ctx, decided, status).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Validation guarantees exactly one source; this keeps the match total without a panic.
fn unreachable_source() -> Decided {
    Decided::new(
        APPLICATION_INSIGHTS_READY,
        Status::False,
        reason::INVALID_SPEC,
        "set exactly one of applicationInsights.provision or applicationInsights.existing",
    )
}

/// Provisions (or verifies) the tenant's component and writes its connection string Secret.
/// Returns the condition and when to look again (`None`: only on change).
async fn provisioned_condition(
    tenant: &TelemetryTenant,
    ctx: &Context,
    provision: &ProvisionSpec,
    status: &mut TelemetryTenantStatus,
) -> Result<(Decided, Option<Duration>)> {
    let timings = &ctx.settings.provision_timings;
    let Some(azure) = &ctx.settings.azure else {
        return Ok((
            Decided::new(
                APPLICATION_INSIGHTS_READY,
                Status::False,
                provision::reason::AUTHENTICATION_FAILED,
                "no Azure credential is configured for telemux (workload identity, client secret or managed identity); see the README",
            ),
            Some(timings.slow),
        ));
    };
    let namespace = tenant.namespace().unwrap_or_default();
    let generation = tenant.metadata.generation.unwrap_or_default();
    let key = verified_key(tenant);
    let id = provision::component_id(tenant, provision);
    let secret_name = connection_string_secret_name(tenant);

    // Verified for this generation, recently, and the Secret is there: no ARM call needed.
    let verified = ctx
        .components_verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .is_some_and(|(g, at)| *g == generation && at.elapsed() < timings.drift);
    let previous_ready = tenant.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == APPLICATION_INSIGHTS_READY && c.reason == provision::reason::PROVISIONED
            })
            .map(|c| c.message.clone())
    });
    if verified
        && let Some(message) = previous_ready
        && ctx
            .managed_secret_value(&namespace, &secret_name, CONNECTION_STRING_KEY)
            .is_some()
    {
        return Ok((
            Decided::new(
                APPLICATION_INSIGHTS_READY,
                Status::True,
                provision::reason::PROVISIONED,
                message,
            ),
            Some(timings.drift),
        ));
    }

    match provision::ensure_component(azure.0.as_ref(), tenant, provision).await {
        Ok(Provisioned::Ready {
            resource_id,
            connection_string,
        }) => {
            if ConnectionString::parse(&connection_string).is_err() {
                return Ok((
                    Decided::new(
                        APPLICATION_INSIGHTS_READY,
                        Status::False,
                        provision::reason::AZURE_ERROR,
                        format!(
                            "Azure returned a connection string for {resource_id} that cannot be parsed"
                        ),
                    ),
                    Some(timings.fast),
                ));
            }
            apply(
                &ctx.client,
                &namespace,
                &connection_string_secret(tenant, &connection_string),
            )
            .await?;
            status.application_insights_resource_id = Some(resource_id.clone());
            ctx.components_verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (generation, std::time::Instant::now()));
            Ok((
                Decided::new(
                    APPLICATION_INSIGHTS_READY,
                    Status::True,
                    provision::reason::PROVISIONED,
                    format!("component {resource_id}; connection string in Secret {secret_name}"),
                ),
                Some(timings.drift),
            ))
        }
        Ok(Provisioned::InProgress { resource_id, state }) => {
            status.application_insights_resource_id = Some(resource_id.clone());
            Ok((
                Decided::new(
                    APPLICATION_INSIGHTS_READY,
                    Status::False,
                    provision::reason::PROVISIONING,
                    format!("Azure is provisioning {resource_id} (provisioningState {state})"),
                ),
                Some(timings.fast),
            ))
        }
        Err(error) => {
            let (reason, next) = provision::failure_reason(&error, timings);
            tracing::info!(component = %id.resource_id(), %reason, %error, "Application Insights not ready");
            Ok((
                Decided::new(
                    APPLICATION_INSIGHTS_READY,
                    Status::False,
                    reason,
                    format!("component {}: {error}", id.resource_id()),
                ),
                next,
            ))
        }
    }
}

/// Routed: which collectors of the tenant's namespace route it, from their status.
fn routed_condition(
    tenant: &TelemetryTenant,
    ctx: &Context,
    status: &mut TelemetryTenantStatus,
) -> Decided {
    let namespace = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let id = &tenant.spec.tenant_id;
    let mut collectors: Vec<_> = ctx
        .collectors
        .state()
        .into_iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    collectors.sort_by_key(|c| c.name_any());

    for collector in &collectors {
        let Some(cs) = &collector.status else {
            continue;
        };
        if cs.routed_tenants.iter().any(|t| t == id) {
            status.collectors.push(collector.name_any());
        } else if let Some(rejection) = cs.rejected_tenants.iter().find(|r| r.name == name) {
            return Decided::new(
                ROUTED,
                Status::False,
                rejection.reason.clone(),
                format!(
                    "RegionalCollector {}: {}",
                    collector.name_any(),
                    rejection.message
                ),
            );
        }
    }
    let uncovered: Vec<&String> = tenant
        .spec
        .regions
        .iter()
        .filter(|region| !collectors.iter().any(|c| &c.spec.region == *region))
        .collect();
    if !status.collectors.is_empty() {
        let mut message = format!(
            "routed by RegionalCollector {}",
            status.collectors.join(", ")
        );
        if !uncovered.is_empty() {
            message.push_str(&format!(
                "; no collector yet for region {}",
                join(&uncovered)
            ));
        }
        Decided::new(ROUTED, Status::True, reason::ROUTED, message)
    } else if uncovered.len() == tenant.spec.regions.len() {
        Decided::new(
            ROUTED,
            Status::False,
            reason::NO_COLLECTOR,
            format!(
                "no RegionalCollector in namespace {namespace} serves region {}",
                join(&uncovered)
            ),
        )
    } else {
        Decided::new(
            ROUTED,
            Status::False,
            reason::PENDING,
            "waiting for the region's collectors to route this tenant",
        )
    }
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn finish(
    tenant: &TelemetryTenant,
    ctx: &Context,
    mut decided: Vec<Decided>,
    mut status: TelemetryTenantStatus,
) -> Result<()> {
    decided.push(ready(
        &decided,
        reason::READY,
        "telemetry is routed to the tenant's Application Insights",
    ));
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    status.conditions = merge(&previous, decided, tenant.metadata.generation);
    if tenant.status.as_ref() == Some(&status) {
        return Ok(());
    }
    for condition in &status.conditions {
        // Waiting is normal; only problems a user must act on are warnings.
        let problem = condition.status == "False" && !condition.reason.ends_with("Pending");
        if problem && transitioned(&previous, condition) && condition.type_ != "Ready" {
            tracing::info!(condition = %condition.type_, reason = %condition.reason, message = %condition.message, "tenant not ready");
            ctx.event(
                tenant,
                EventType::Warning,
                &condition.reason,
                format!("{}: {}", condition.type_, condition.message),
            )
            .await;
        }
    }
    apply_status(&ctx.client, tenant, &status).await
}

pub fn error_policy(tenant: Arc<TelemetryTenant>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %tenant.name_any(), namespace = ?tenant.namespace(), kind = error.metric_label(), %error, "tenant reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
