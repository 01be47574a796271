//! The tenant reconcile's decisions, pure: from what was observed to what to write, which
//! conditions hold and when to look again.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;

use super::observe::{ObservedSource, StoredCredential};
use crate::api::condition_types::{APPLICATION_INSIGHTS_READY, CREDENTIALS_READY, ROUTED};
use crate::api::reasons::{self, Reason};
use crate::api::tenant::TenantEndpoint;
use crate::api::{SecretKeyRef, TelemetryTenant, TelemetryTenantStatus};
use crate::azure::AzureError;
use crate::connection_string::ConnectionString;
use crate::controller::conditions::{Decided, Status, with_ready};
use crate::controller::io::SecretLookup;
use crate::controller::provision::Provisioned;
use crate::controller::retry::{ProvisionTimings, azure_failure};
use crate::credentials::{is_bcrypt_hash, verify_password};
use crate::pipeline::selection::{ListedCollector, collector_selects};
use crate::pipeline::shards::ShardIndex;

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
        ObservedSource::Existing { reference, lookup } => match existing(reference, lookup) {
            Ok((connection_string, condition)) => ConnectionAction::Copy {
                connection_string,
                condition,
            },
            Err(condition) => report(condition, Some(resync)),
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

/// The user's connection string and its condition, or the condition saying what is wrong.
fn existing(reference: &SecretKeyRef, lookup: &SecretLookup) -> Result<(String, Decided), Decided> {
    let (name, key) = (&reference.name, &reference.key);
    let problem = |reason, message| Err(ai(Status::False, reason, message));
    match lookup {
        SecretLookup::SecretNotFound => problem(
            reasons::SECRET_NOT_FOUND,
            format!(
                "Secret {name:?} (applicationInsights.existing.connectionStringSecretRef) does not exist"
            ),
        ),
        SecretLookup::KeyNotFound => problem(
            reasons::SECRET_KEY_NOT_FOUND,
            format!("Secret {name:?} has no key {key:?}"),
        ),
        SecretLookup::Found(raw) => match ConnectionString::parse(raw) {
            Err(e) => problem(
                reasons::INVALID_CONNECTION_STRING,
                format!("key {key:?} of Secret {name:?}: {e}"),
            ),
            Ok(_) => {
                let message = format!("connection string from Secret {name:?} key {key:?}");
                let condition = ai(Status::True, reasons::CONNECTION_STRING_RESOLVED, message);
                Ok((raw.clone(), condition))
            }
        },
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
pub fn routed(tenant: &TelemetryTenant, collectors: &[ListedCollector]) -> (Decided, Vec<String>) {
    let listed = listed_by(tenant, collectors);
    let decided = if let Some(rejection) = listed.rejection {
        rejection
    } else if !listed.routed_by.is_empty() {
        let mut message = format!(
            "routed by RegionalCollector {}",
            listed.routed_by.join(", ")
        );
        let uncovered = uncovered_regions(tenant, collectors);
        if !uncovered.is_empty() {
            message.push_str(&format!(
                "; no collector yet for region {}",
                uncovered.join(", ")
            ));
        }
        Decided::new(ROUTED, Status::True, reasons::ROUTED, message)
    } else if let Some(exclusion) = listed.exclusion {
        exclusion
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
        let message = "waiting for the region's collectors to route this tenant";
        Decided::new(ROUTED, Status::False, reasons::PENDING, message)
    };
    (decided, listed.routed_by)
}

/// What the collectors' statuses say about one tenant. A collector's CredentialsPending or
/// ConnectionStringPending reads as not listed (Pending): the tenant's own conditions say that
/// first hand, and a collector's verdict on a burst of new tenants is often older than their
/// credentials; showing it cost every such tenant a status write that was stale when made.
#[derive(Default)]
struct Listed {
    routed_by: Vec<String>,
    /// The first collector's rejection of the tenant.
    rejection: Option<Decided>,
    /// The first collector's exclusion (accepted and dropped).
    exclusion: Option<Decided>,
}

fn listed_by(tenant: &TelemetryTenant, collectors: &[ListedCollector]) -> Listed {
    let (name, id) = (tenant.name_any(), &tenant.spec.tenant_id);
    let mut listed = Listed::default();
    for collector in collectors {
        let listing = &collector.listing;
        let collector_name = collector.name_any();
        if listing.routes(id) {
            listed.routed_by.push(collector_name);
        } else if let Some((reason, message)) = listing.rejection(&name) {
            let message = format!("RegionalCollector {collector_name}: {message}");
            let decided = Decided::new(ROUTED, Status::False, reason, message);
            listed.rejection.get_or_insert(decided);
        } else if let Some(reason) = listing.exclusion(id) {
            let why = if reason == reasons::SUSPENDED.name {
                "spec.suspend is true"
            } else {
                "its regions do not allow the collector's region"
            };
            let message = format!(
                "RegionalCollector {collector_name} accepts and drops this tenant's telemetry: {why}"
            );
            let decided = Decided::new(ROUTED, Status::False, reason, message);
            listed.exclusion.get_or_insert(decided);
        }
    }
    listed
}

/// Where the tenant's apps send: for each collector that selects it, has given it a shard and
/// has taken it into account (its status lists the tenant as routed, excluded or rejected),
/// that shard's Service (collectors by name, so the first of a region is its endpoint there).
/// A new tenant is told its endpoint when its shard serves it, in the same status write that
/// reads Routed.
pub fn endpoints(
    tenant: &TelemetryTenant,
    collectors: &[ListedCollector],
    recorded: &BTreeMap<String, ShardIndex>,
) -> Vec<TenantEndpoint> {
    collectors
        .iter()
        .filter(|c| {
            collector_selects(c, tenant)
                && c.listing
                    .acknowledges(&tenant.name_any(), &tenant.spec.tenant_id)
        })
        .filter_map(|c| {
            let shard = *recorded.get(&c.name_any())?;
            let host = crate::resources::collector::service_host(c, shard);
            Some(TenantEndpoint {
                region: c.spec.region.clone(),
                collector: c.name_any(),
                shard,
                grpc: format!("{host}:{}", c.spec.ports.grpc),
                http: format!("http://{host}:{}", c.spec.ports.http),
            })
        })
        .collect()
}

/// The tenant's regions that no collector of their own region selects.
fn uncovered_regions<'a>(
    tenant: &'a TelemetryTenant,
    collectors: &[ListedCollector],
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
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = with_ready(
        previous,
        decided,
        |_| true,
        "telemetry is routed to the tenant's Application Insights",
        tenant.metadata.generation,
    );
    let stored = tenant.status.as_ref().map(owned_by_the_reconcile);
    (stored.as_ref() != Some(&status)).then_some(status)
}

/// The part of a stored status the reconcile writes: without the delivery figures and the
/// `Delivering` condition, which the collection of figures owns (another field manager).
fn owned_by_the_reconcile(stored: &TelemetryTenantStatus) -> TelemetryTenantStatus {
    let mut owned = stored.clone();
    owned.delivery = None;
    owned
        .conditions
        .retain(|c| c.type_ != crate::api::condition_types::DELIVERING);
    owned
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RegionalCollector;
    use std::sync::Arc;

    fn listed(collector: RegionalCollector) -> ListedCollector {
        ListedCollector::new(Arc::new(collector))
    }

    fn tenant(regions: &[&str]) -> TelemetryTenant {
        let spec = serde_json::json!({
            "tenantId": "acme", "regions": regions,
            "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
        });
        let mut t = TelemetryTenant::new("acme", serde_json::from_value(spec).unwrap());
        t.metadata.namespace = Some("ns".into());
        t
    }

    fn collector(
        name: &str,
        region: &str,
        selector: Option<serde_json::Value>,
    ) -> RegionalCollector {
        let mut spec = serde_json::json!({ "region": region });
        if let Some(selector) = selector {
            spec["tenantSelector"] = selector;
        }
        let mut c = RegionalCollector::new(name, serde_json::from_value(spec).unwrap());
        c.metadata.namespace = Some("ns".into());
        c.status = Some(Default::default());
        c
    }

    #[test]
    fn a_tenant_is_told_its_shards_endpoint_once_the_collector_lists_it() {
        let tenant = tenant(&["westeurope"]);
        let recorded = BTreeMap::from([("eu".to_owned(), 3)]);
        let mut eu = collector("eu", "westeurope", None);
        let before = endpoints(&tenant, &[listed(eu.clone())], &recorded);
        assert!(before.is_empty(), "recorded, not yet served: {before:?}");
        eu.status.as_mut().unwrap().routed_tenants = vec!["acme".into()];
        let after = endpoints(&tenant, &[listed(eu.clone())], &recorded);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].shard, 3);
        assert_eq!(after[0].grpc, "eu-collector-3.ns.svc:4317");
        // Excluded (suspended) later: the endpoint stays, its clients keep their config.
        let status = eu.status.as_mut().unwrap();
        status.routed_tenants.clear();
        status.excluded_tenants = vec![
            serde_json::from_value(serde_json::json!({
                "tenantId": "acme", "reason": "Suspended"
            }))
            .unwrap(),
        ];
        assert_eq!(endpoints(&tenant, &[listed(eu)], &recorded), after);
    }

    fn with_status(mut c: RegionalCollector, status: serde_json::Value) -> ListedCollector {
        c.status = Some(serde_json::from_value(status).unwrap());
        listed(c)
    }

    fn stored(user: &str, password: &str, hash: &str) -> StoredCredential {
        StoredCredential {
            user: Some(user.into()),
            password: Some(password.into()),
            hash: Some(hash.into()),
        }
    }

    #[test]
    fn an_intact_credential_is_kept_and_anything_else_is_issued_again() {
        let issued = crate::credentials::issue_credential().unwrap();
        let intact = stored("acme", &issued.password, &issued.bcrypt_hash);
        assert_eq!(
            credential(&intact, Some("acme")),
            CredentialAction::Keep {
                password: issued.password.clone(),
                hash: issued.bcrypt_hash.clone()
            }
        );
        // The platform credential has no user name to match.
        assert!(matches!(
            credential(&intact, None),
            CredentialAction::Keep { .. }
        ));
        let renamed = credential(&intact, Some("globex"));
        assert_eq!(renamed, CredentialAction::Issue, "the tenant id changed");
        let edited = stored("acme", "typed-by-hand", &issued.bcrypt_hash);
        assert_eq!(credential(&edited, Some("acme")), CredentialAction::Issue);
        let not_a_hash = stored("acme", &issued.password, "plain");
        assert_eq!(
            credential(&not_a_hash, Some("acme")),
            CredentialAction::Issue
        );
        assert_eq!(
            credential(&StoredCredential::default(), Some("acme")),
            CredentialAction::Issue
        );
    }

    fn existing(lookup: SecretLookup) -> ObservedSource {
        let reference = SecretKeyRef {
            name: "acme-ai".into(),
            key: "cs".into(),
        };
        ObservedSource::Existing { reference, lookup }
    }

    fn reported(action: ConnectionAction) -> (Status, String, Option<Duration>) {
        match action {
            ConnectionAction::Report { condition, requeue } => {
                (condition.status, condition.reason, requeue)
            }
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn the_users_secret_decides_the_connection_condition() {
        let (t, resync) = (ProvisionTimings::default(), Duration::from_secs(300));
        let missing = reported(connection(
            &existing(SecretLookup::SecretNotFound),
            &t,
            resync,
        ));
        assert_eq!(
            missing,
            (Status::False, "SecretNotFound".into(), Some(resync))
        );
        let no_key = reported(connection(&existing(SecretLookup::KeyNotFound), &t, resync));
        assert_eq!(no_key.1, "SecretKeyNotFound");
        let garbage = existing(SecretLookup::Found("not a connection string".into()));
        assert_eq!(
            reported(connection(&garbage, &t, resync)).1,
            "InvalidConnectionString"
        );
        let good = "InstrumentationKey=00000000-0000-0000-0000-000000000001";
        match connection(&existing(SecretLookup::Found(good.into())), &t, resync) {
            ConnectionAction::Copy {
                connection_string,
                condition,
            } => {
                assert_eq!(connection_string, good);
                assert_eq!(condition.reason, "ConnectionStringResolved");
            }
            other => panic!("expected a copy, got {other:?}"),
        }
    }

    /// A component verified for this generation recently, with its Secret in place, needs no
    /// ARM call; missing any of the three, Azure is asked.
    #[test]
    fn a_recently_verified_component_is_not_asked_for_again() {
        let (t, resync) = (ProvisionTimings::default(), Duration::from_secs(300));
        let source = |verified_recently, secret_present| ObservedSource::Provision {
            verified_recently,
            previous_provisioned: Some("component /subscriptions/x".into()),
            secret_present,
        };
        assert_eq!(
            reported(connection(&source(true, true), &t, resync)),
            (Status::True, "Provisioned".into(), Some(t.drift))
        );
        assert_eq!(
            connection(&source(false, true), &t, resync),
            ConnectionAction::Provision
        );
        assert_eq!(
            connection(&source(true, false), &t, resync),
            ConnectionAction::Provision
        );
        let without = reported(connection(
            &ObservedSource::ProvisionWithoutAzure,
            &t,
            resync,
        ));
        assert_eq!(
            without,
            (Status::False, "AuthenticationFailed".into(), Some(t.slow))
        );
    }

    #[test]
    fn azures_answers_become_conditions_and_schedules() {
        let t = ProvisionTimings::default();
        let ready = Ok(Provisioned::Ready {
            resource_id: "/subscriptions/x/c".into(),
            connection_string: "InstrumentationKey=00000000-0000-0000-0000-000000000001".into(),
        });
        let verdict = provisioned(&ready, "/subscriptions/x/c", "acme-appinsights", &t);
        assert_eq!(
            (verdict.condition.reason.as_str(), verdict.requeue),
            ("Provisioned", Some(t.drift))
        );
        assert!(verdict.connection_string.is_some());
        let unparsable = Ok(Provisioned::Ready {
            resource_id: "r".into(),
            connection_string: "x".into(),
        });
        let verdict = provisioned(&unparsable, "r", "s", &t);
        assert_eq!(
            (verdict.condition.reason.as_str(), verdict.connection_string),
            ("AzureError", None)
        );
        let busy = Ok(Provisioned::InProgress {
            resource_id: "r".into(),
            state: "Creating".into(),
        });
        let verdict = provisioned(&busy, "r", "s", &t);
        assert_eq!(
            (verdict.condition.reason.as_str(), verdict.requeue),
            ("Provisioning", Some(t.fast))
        );
        assert_eq!(verdict.resource_id.as_deref(), Some("r"));
        let throttled = Err(AzureError::Throttled {
            retry_after: Some(Duration::from_secs(42)),
            message: "429".into(),
        });
        let verdict = provisioned(&throttled, "r", "s", &t);
        assert_eq!(
            (verdict.condition.reason.as_str(), verdict.requeue),
            ("Throttled", Some(Duration::from_secs(42)))
        );
    }

    /// A tenant the region's only collector does not select (its selector picks premium
    /// tenants) has no collector to wait for: NoCollectorInRegion, not Pending forever.
    #[test]
    fn a_tenant_no_collector_selects_is_told_so_instead_of_pending() {
        let premium = serde_json::json!({ "matchLabels": { "tier": "premium" } });
        let only = listed(collector("eu-premium", "westeurope", Some(premium)));
        let (decided, routed_by) = routed(&tenant(&["westeurope"]), &[only]);
        assert_eq!(decided.reason, "NoCollectorInRegion");
        assert!(routed_by.is_empty());
        let selecting = listed(collector("eu", "westeurope", None));
        let (decided, _) = routed(&tenant(&["westeurope"]), &[selecting]);
        assert_eq!(
            decided.reason, "Pending",
            "a selecting collector is yet to render it"
        );
    }

    #[test]
    fn routed_lists_its_collectors_and_a_rejection_wins() {
        let eu = with_status(
            collector("eu", "westeurope", None),
            serde_json::json!({ "routedTenants": ["acme"] }),
        );
        let (decided, routed_by) = routed(
            &tenant(&["westeurope", "eastus"]),
            std::slice::from_ref(&eu),
        );
        assert_eq!(
            (decided.status, decided.reason.as_str()),
            (Status::True, "Routed")
        );
        assert!(
            decided
                .message
                .contains("no collector yet for region eastus"),
            "{}",
            decided.message
        );
        assert_eq!(routed_by, ["eu"]);
        let rejection = serde_json::json!({ "rejectedTenants": [{ "name": "acme", "tenantId": "acme",
            "reason": "DuplicateTenantId", "message": "globex owns acme" }] });
        let us = with_status(collector("us", "eastus", None), rejection);
        let (decided, _) = routed(&tenant(&["westeurope", "eastus"]), &[eu, us]);
        assert_eq!(
            (decided.status, decided.reason.as_str()),
            (Status::False, "DuplicateTenantId")
        );
    }

    /// A collector's "not ready for it yet" (its status older than the tenant's credential,
    /// in a burst) reads as Pending, the tenant's first word, so it costs no status write.
    #[test]
    fn a_collector_waiting_for_the_tenants_credential_reads_pending() {
        for reason in ["CredentialsPending", "ConnectionStringPending"] {
            let waiting = serde_json::json!({ "rejectedTenants": [{ "name": "acme",
                "tenantId": "acme", "reason": reason, "message": "not issued yet" }] });
            let eu = with_status(collector("eu", "westeurope", None), waiting);
            let (decided, routed_by) = routed(&tenant(&["westeurope"]), std::slice::from_ref(&eu));
            let unlisted = listed(collector("eu", "westeurope", None));
            let (first, _) = routed(&tenant(&["westeurope"]), &[unlisted]);
            assert_eq!(decided, first, "{reason}");
            assert!(routed_by.is_empty());
            let recorded = [("eu".to_owned(), 0)].into();
            assert!(endpoints(&tenant(&["westeurope"]), &[eu], &recorded).is_empty());
        }
    }

    #[test]
    fn a_suspended_tenant_reads_suspended() {
        let excluded = serde_json::json!({ "excludedTenants": [{ "tenantId": "acme", "reason": "Suspended" }] });
        let eu = with_status(collector("eu", "westeurope", None), excluded);
        let (decided, _) = routed(&tenant(&["westeurope"]), &[eu]);
        assert_eq!(decided.reason, "Suspended");
        assert!(
            decided.message.contains("spec.suspend"),
            "{}",
            decided.message
        );
    }

    /// Ready carries the first condition that is not True, in the order credentials,
    /// connection string, routing; an invalid spec sets every condition.
    #[test]
    fn ready_follows_the_first_blocking_condition_and_an_unchanged_status_is_not_written() {
        let t = tenant(&["westeurope"]);
        let blocked = vec![
            credentials_condition(&t, "acme-ingestion-credentials"),
            ai(
                Status::False,
                reasons::SECRET_NOT_FOUND,
                "Secret acme-ai does not exist",
            ),
            Decided::new(ROUTED, Status::False, reasons::PENDING, "waiting"),
        ];
        let written = status(&t, blocked.clone(), base_status(&t)).unwrap();
        let ready = written
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        let mut stored = t.clone();
        stored.status = Some(written);
        assert_eq!(
            status(&stored, blocked, base_status(&stored)),
            None,
            "nothing changed"
        );
        let invalid = status(
            &t,
            invalid_spec("regions: must not be empty"),
            base_status(&t),
        )
        .unwrap();
        assert!(invalid.conditions.iter().all(|c| c.reason == "InvalidSpec"));
    }
}
