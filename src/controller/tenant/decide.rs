//! The tenant reconcile's decisions, pure: from what was observed to what to write, which
//! conditions hold and when to look again.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use super::observe::{ObservedSource, StoredCredential};
use crate::api::condition_types::{APPLICATION_INSIGHTS_READY, CREDENTIALS_READY, ROUTED};
use crate::api::reasons::{self, Reason};
use crate::api::{RegionalCollector, TelemetryTenant, TelemetryTenantStatus};
use crate::azure::AzureError;
use crate::connection_string::ConnectionString;
use crate::controller::conditions::{Decided, Status, merge, ready};
use crate::controller::io::SecretLookup;
use crate::controller::provision::Provisioned;
use crate::controller::retry::{ProvisionTimings, azure_failure};
use crate::credentials::{is_bcrypt_hash, verify_password};
use crate::pipeline::selection::collector_selects;

/// The ingestion credential: kept as long as it is intact, issued otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialAction {
    Keep { password: String, hash: String },
    Issue,
}

/// Keep the stored credential only when it is whole, names this tenant and its password
/// matches its hash; anything else (a Secret edited by hand, a changed tenant id) re-issues.
pub fn credential(stored: &StoredCredential, user: Option<&str>) -> CredentialAction {
    match (&stored.password, &stored.hash) {
        (Some(password), Some(hash))
            if (user.is_none() || stored.user.as_deref() == user)
                && is_bcrypt_hash(hash)
                && verify_password(password, hash) =>
        {
            CredentialAction::Keep {
                password: password.clone(),
                hash: hash.clone(),
            }
        }
        _ => CredentialAction::Issue,
    }
}

pub fn credentials_condition(tenant: &TelemetryTenant, secret_name: &str) -> Decided {
    Decided::new(
        CREDENTIALS_READY,
        Status::True,
        reasons::ISSUED,
        format!(
            "clients authenticate as {:?} with the password in Secret {secret_name}",
            tenant.spec.tenant_id
        ),
    )
}

/// Every condition False with the spec's problem: nothing is written until the spec changes.
pub fn invalid_spec(message: &str) -> Vec<Decided> {
    [CREDENTIALS_READY, APPLICATION_INSIGHTS_READY, ROUTED]
        .into_iter()
        .map(|type_| Decided::new(type_, Status::False, reasons::INVALID_SPEC, message))
        .collect()
}

/// What to do about the connection string.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionAction {
    /// Write the user's connection string into the tenant's Secret.
    Copy {
        connection_string: String,
        condition: Decided,
    },
    /// Nothing to write: report, and look again after `requeue` (`None`: on change only).
    Report {
        condition: Decided,
        requeue: Option<Duration>,
    },
    /// Ask Azure Resource Manager.
    Provision,
}

fn ai(status: Status, reason: Reason, message: impl Into<String>) -> Decided {
    Decided::new(APPLICATION_INSIGHTS_READY, status, reason, message)
}

/// From the observed source of the connection string to what to do about it.
pub fn connection(
    source: &ObservedSource,
    timings: &ProvisionTimings,
    resync: Duration,
) -> ConnectionAction {
    let report = |condition, requeue| ConnectionAction::Report { condition, requeue };
    match source {
        ObservedSource::Existing { reference, lookup } => match lookup {
            SecretLookup::SecretNotFound => report(
                ai(
                    Status::False,
                    reasons::SECRET_NOT_FOUND,
                    format!(
                        "Secret {:?} (applicationInsights.existing.connectionStringSecretRef) does not exist",
                        reference.name
                    ),
                ),
                Some(resync),
            ),
            SecretLookup::KeyNotFound => report(
                ai(
                    Status::False,
                    reasons::SECRET_KEY_NOT_FOUND,
                    format!("Secret {:?} has no key {:?}", reference.name, reference.key),
                ),
                Some(resync),
            ),
            SecretLookup::Found(raw) => match ConnectionString::parse(raw) {
                Err(problem) => report(
                    ai(
                        Status::False,
                        reasons::INVALID_CONNECTION_STRING,
                        format!(
                            "key {:?} of Secret {:?}: {problem}",
                            reference.key, reference.name
                        ),
                    ),
                    Some(resync),
                ),
                Ok(_) => ConnectionAction::Copy {
                    connection_string: raw.clone(),
                    condition: ai(
                        Status::True,
                        reasons::CONNECTION_STRING_RESOLVED,
                        format!(
                            "connection string from Secret {:?} key {:?}",
                            reference.name, reference.key
                        ),
                    ),
                },
            },
        },
        ObservedSource::ProvisionWithoutAzure => {
            let (condition, requeue) = without_azure(timings);
            report(condition, requeue)
        }
        // Verified for this generation recently, and the Secret is there: no ARM call needed.
        ObservedSource::Provision {
            verified_recently: true,
            previous_provisioned: Some(message),
            secret_present: true,
        } => report(
            ai(Status::True, reasons::PROVISIONED, message.clone()),
            Some(timings.drift),
        ),
        ObservedSource::Provision { .. } => ConnectionAction::Provision,
        ObservedSource::Missing => report(
            ai(
                Status::False,
                reasons::INVALID_SPEC,
                "set exactly one of applicationInsights.provision or applicationInsights.existing",
            ),
            None,
        ),
    }
}

/// A component to provision, but no Azure credential to do it with: a person must configure one.
pub fn without_azure(timings: &ProvisionTimings) -> (Decided, Option<Duration>) {
    let message = "no Azure credential is configured for telemux (workload identity, client secret or managed identity); see the README";
    (
        ai(Status::False, reasons::AUTHENTICATION_FAILED, message),
        Some(timings.slow),
    )
}

/// What Azure's answer means for the tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionVerdict {
    pub condition: Decided,
    pub requeue: Option<Duration>,
    /// The connection string to write into the tenant's Secret.
    pub connection_string: Option<String>,
    /// The component's resource id, for the status.
    pub resource_id: Option<String>,
}

/// From Azure's answer (`component`: the resource id telemux asked about) to the condition.
pub fn provisioned(
    outcome: &Result<Provisioned, AzureError>,
    component: &str,
    secret_name: &str,
    timings: &ProvisionTimings,
) -> ProvisionVerdict {
    let verdict = |condition, requeue, connection_string, resource_id| ProvisionVerdict {
        condition,
        requeue,
        connection_string,
        resource_id,
    };
    match outcome {
        Ok(Provisioned::Ready {
            resource_id,
            connection_string,
        }) => {
            if ConnectionString::parse(connection_string).is_err() {
                let message = format!(
                    "Azure returned a connection string for {resource_id} that cannot be parsed"
                );
                return verdict(
                    ai(Status::False, reasons::AZURE_ERROR, message),
                    Some(timings.fast),
                    None,
                    None,
                );
            }
            let message =
                format!("component {resource_id}; connection string in Secret {secret_name}");
            verdict(
                ai(Status::True, reasons::PROVISIONED, message),
                Some(timings.drift),
                Some(connection_string.clone()),
                Some(resource_id.clone()),
            )
        }
        Ok(Provisioned::InProgress { resource_id, state }) => {
            let message =
                format!("Azure is provisioning {resource_id} (provisioningState {state})");
            verdict(
                ai(Status::False, reasons::PROVISIONING, message),
                Some(timings.fast),
                None,
                Some(resource_id.clone()),
            )
        }
        Err(error) => {
            let (reason, requeue) = azure_failure(error, timings);
            let message = format!("component {component}: {error}");
            verdict(ai(Status::False, reason, message), requeue, None, None)
        }
    }
}

/// Routed: which collectors of the namespace route the tenant, from their status, and the
/// names of those that do. A collector's rejection of the tenant wins; a tenant no collector
/// selects has none to wait for.
pub fn routed(
    tenant: &TelemetryTenant,
    collectors: &[Arc<RegionalCollector>],
) -> (Decided, Vec<String>) {
    let name = tenant.name_any();
    let id = &tenant.spec.tenant_id;
    let mut routed_by = Vec::new();
    let mut excluded = None;
    for collector in collectors {
        let Some(status) = &collector.status else {
            continue;
        };
        if status.routed_tenants.iter().any(|t| t == id) {
            routed_by.push(collector.name_any());
        } else if let Some(rejection) = status.rejected_tenants.iter().find(|r| r.name == name) {
            let message = format!(
                "RegionalCollector {}: {}",
                collector.name_any(),
                rejection.message
            );
            return (
                Decided::new(ROUTED, Status::False, rejection.reason.clone(), message),
                routed_by,
            );
        } else if let Some(exclusion) = status.excluded_tenants.iter().find(|e| &e.tenant_id == id)
        {
            excluded.get_or_insert((collector.name_any(), exclusion.reason.clone()));
        }
    }
    let decided = if !routed_by.is_empty() {
        let mut message = format!("routed by RegionalCollector {}", routed_by.join(", "));
        let uncovered = uncovered_regions(tenant, collectors);
        if !uncovered.is_empty() {
            message.push_str(&format!(
                "; no collector yet for region {}",
                uncovered.join(", ")
            ));
        }
        Decided::new(ROUTED, Status::True, reasons::ROUTED, message)
    } else if let Some((collector, reason)) = excluded {
        let why = if reason == reasons::SUSPENDED.name {
            "spec.suspend is true"
        } else {
            "its regions do not allow the collector's region"
        };
        let message = format!(
            "RegionalCollector {collector} accepts and drops this tenant's telemetry: {why}"
        );
        Decided::new(ROUTED, Status::False, reason, message)
    } else if !collectors.iter().any(|c| collector_selects(c, tenant)) {
        let message = format!(
            "no RegionalCollector in namespace {} selects this tenant (regions {})",
            tenant.namespace().unwrap_or_default(),
            tenant.spec.regions.join(", ")
        );
        Decided::new(
            ROUTED,
            Status::False,
            reasons::NO_COLLECTOR_IN_REGION,
            message,
        )
    } else {
        Decided::new(
            ROUTED,
            Status::False,
            reasons::PENDING,
            "waiting for the region's collectors to route this tenant",
        )
    };
    (decided, routed_by)
}

/// The tenant's regions that no collector of their own region selects.
fn uncovered_regions<'a>(
    tenant: &'a TelemetryTenant,
    collectors: &[Arc<RegionalCollector>],
) -> Vec<&'a str> {
    tenant
        .spec
        .regions
        .iter()
        .filter(|region| {
            !collectors
                .iter()
                .any(|c| &c.spec.region == *region && collector_selects(c, tenant))
        })
        .map(String::as_str)
        .collect()
}

/// The status to write: the decided conditions merged into the previous ones, with `Ready`
/// summarising them. `None` when it equals the stored status (nothing to write).
pub fn status(
    tenant: &TelemetryTenant,
    decided: Vec<Decided>,
    mut status: TelemetryTenantStatus,
) -> Option<TelemetryTenantStatus> {
    let mut decided = decided;
    decided.push(ready(
        &decided,
        reasons::READY.name,
        "telemetry is routed to the tenant's Application Insights",
    ));
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = merge(previous, decided, tenant.metadata.generation);
    (tenant.status.as_ref() != Some(&status)).then_some(status)
}

/// The status fields carried over from the last reconcile.
pub fn base_status(tenant: &TelemetryTenant) -> TelemetryTenantStatus {
    TelemetryTenantStatus {
        observed_generation: tenant.metadata.generation,
        application_insights_resource_id: tenant
            .status
            .as_ref()
            .and_then(|s| s.application_insights_resource_id.clone()),
        ..TelemetryTenantStatus::default()
    }
}

/// The spec's problem, if any: then only conditions are written, until the spec changes.
pub fn spec_problem(tenant: &TelemetryTenant) -> Option<String> {
    crate::validation::validate_tenant_spec(&tenant.spec)
        .err()
        .map(|p| p.message)
}
