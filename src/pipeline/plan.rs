//! Decides, from a collector and the tenants it could serve, which tenants it routes, which it
//! accepts but drops (suspended, or not allowed in its region) and which it leaves out, and what
//! its Secret holds. A tenant's problem only ever affects that tenant.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

use super::delivery::{InvalidMemoryQuantity, memory_limit_bytes, quantity_bytes};
use super::selection::Selection;
use crate::api::collector::{
    BaselineRedaction, BlobContainers, OtlpPorts, RegionalCollectorSpec, TenantExclusion,
    TenantRejection, UnknownTenantPolicy,
};
use crate::api::reasons::{self, Reason};
use crate::api::tenant::{Signals, TelemetryTenantSpec, Tier};
use crate::connection_string::ConnectionString;
use crate::credentials::is_bcrypt_hash;
use crate::layout::{
    BLOB_CONNECTION_STRING_FILE, HTPASSWD_FILE, PLATFORM_CONNECTION_STRING_FILE, PLATFORM_USER,
    tenant_connection_string_file,
};
use crate::validation::validate_tenant_spec;

/// What the reconciler read about one tenant.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSource {
    /// The TelemetryTenant's name.
    pub name: String,
    #[serde(default)]
    pub created: Option<Time>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub spec: TelemetryTenantSpec,
    /// bcrypt hash from the tenant's credential Secret, once issued.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Connection string from the tenant's connection-string Secret, once resolved.
    #[serde(default)]
    pub connection_string: Option<String>,
}

/// What the reconciler read about one collector and its candidate tenants.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorSources {
    pub spec: RegionalCollectorSpec,
    /// bcrypt hash of the platform credential (when `spec.platform` is set).
    #[serde(default)]
    pub platform_password_hash: Option<String>,
    #[serde(default)]
    pub platform_connection_string: Option<String>,
    #[serde(default)]
    pub blob_connection_string: Option<String>,
    /// Every tenant of the collector's namespace.
    pub tenants: Vec<TenantSource>,
}

impl CollectorSources {
    /// The same collector, with only `tenants`.
    pub fn with_tenants(&self, tenants: Vec<TenantSource>) -> CollectorSources {
        CollectorSources {
            spec: self.spec.clone(),
            platform_password_hash: self.platform_password_hash.clone(),
            platform_connection_string: self.platform_connection_string.clone(),
            blob_connection_string: self.blob_connection_string.clone(),
            tenants,
        }
    }

    /// A SHA-256 over everything a plan is made from: sources with equal fingerprints plan,
    /// render and check alike, so a shard whose fingerprint did not move need not be
    /// rendered again. Connection strings go into the digest, never anywhere else. `None`
    /// only if the sources did not serialize, which nothing here can make them do.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        let mut digest = DigestWriter(Sha256::new());
        serde_json::to_writer(&mut digest, self).ok()?;
        Some(digest.0.finalize().into())
    }
}

/// Feeds what is written into a digest.
struct DigestWriter(Sha256);

impl std::io::Write for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A problem of the collector itself: nothing can be rendered until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CollectorPlanError {
    pub reason: Reason,
    pub message: String,
}

/// A tenant the collector delivers for.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedTenant {
    pub tenant_id: String,
    pub tier: Tier,
    pub signals: Signals,
    pub blocked_values: Vec<String>,
    pub blocked_key_patterns: Vec<String>,
    /// Set when below 100%.
    pub sampling_percentage: Option<f64>,
    /// The collector's `deliveryReportInterval`, when the tenant asked for a delivery report
    /// (`spec.deliveryReport.enabled`); `None` otherwise.
    pub delivery_report_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlatformPlan {
    pub has_sink: bool,
}

/// Everything a collector's configuration and Secret are rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorPlan {
    pub ports: OtlpPorts,
    pub baseline: BaselineRedaction,
    pub blob_containers: Option<BlobContainers>,
    pub platform: Option<PlatformPlan>,
    pub unknown_tenant: UnknownTenantPolicy,
    /// Sorted by tenant id.
    pub routed: Vec<RoutedTenant>,
    /// Sorted by tenant id.
    pub excluded: Vec<TenantExclusion>,
    /// Sorted by tenant name.
    pub rejected: Vec<TenantRejection>,
    /// Files of the collector's Secret: htpasswd and connection strings.
    pub secret_files: BTreeMap<String, String>,
    /// The collector container's memory limit, which the exporters' queues are budgeted from.
    pub memory_limit_bytes: u64,
    /// The size of each collector pod's queue volume, which their queues share.
    pub queue_volume_bytes: u64,
}

/// A tenant the caller has already decided to leave out (by TelemetryTenant name), with why.
pub type Vetoes = BTreeMap<String, (String, String)>;

/// Plans a collector. Fails only for problems of the collector itself; tenant problems become
/// rejections.
pub fn plan_collector(sources: &CollectorSources) -> Result<CollectorPlan, CollectorPlanError> {
    plan_collector_with_vetoes(sources, &Vetoes::new())
}

/// Plans a collector, leaving out the vetoed tenants with the given reason and message.
pub fn plan_collector_with_vetoes(
    sources: &CollectorSources,
    vetoes: &Vetoes,
) -> Result<CollectorPlan, CollectorPlanError> {
    let spec = &sources.spec;
    crate::validation::validate_collector_spec(spec).map_err(|e| CollectorPlanError {
        reason: reasons::INVALID_SPEC,
        message: e.message,
    })?;
    let invalid_quantity = |e: InvalidMemoryQuantity| CollectorPlanError {
        reason: reasons::INVALID_SPEC,
        message: e.to_string(),
    };
    let memory_limit_bytes =
        memory_limit_bytes(spec.resources.as_ref()).map_err(invalid_quantity)?;
    let queue_volume_bytes =
        quantity_bytes(&spec.queue_volume.size, "queueVolume.size").map_err(invalid_quantity)?;
    let selection = Selection::of(spec).map_err(|e| CollectorPlanError {
        reason: reasons::INVALID_SPEC,
        message: format!("tenantSelector is invalid: {e}"),
    })?;

    let mut secret_files = BTreeMap::new();
    let mut htpasswd = BTreeMap::new();

    let blob_containers = match &spec.regional_storage {
        Some(storage) => {
            let cs = sources.blob_connection_string.as_deref().ok_or_else(|| CollectorPlanError {
                reason: reasons::STORAGE_SECRET_MISSING,
                message: format!(
                    "regionalStorage.azureBlob.connectionStringSecretRef: key {:?} of Secret {:?} not found",
                    storage.azure_blob.connection_string_secret_ref.key,
                    storage.azure_blob.connection_string_secret_ref.name
                ),
            })?;
            secret_files.insert(BLOB_CONNECTION_STRING_FILE.to_owned(), cs.trim().to_owned());
            Some(storage.azure_blob.containers.clone())
        }
        None => None,
    };

    let platform = match &spec.platform {
        Some(platform_spec) => {
            let hash = sources
                .platform_password_hash
                .as_deref()
                .filter(|h| is_bcrypt_hash(h))
                .ok_or_else(|| CollectorPlanError {
                    reason: reasons::PLATFORM_CREDENTIALS_PENDING,
                    message: "the platform credential has not been issued yet".into(),
                })?;
            htpasswd.insert(PLATFORM_USER.to_owned(), hash.to_owned());
            let has_sink = match &platform_spec.application_insights {
                Some(ai) => {
                    let raw = sources.platform_connection_string.as_deref().ok_or_else(|| {
                        CollectorPlanError {
                            reason: reasons::PLATFORM_SECRET_MISSING,
                            message: format!(
                                "platform.applicationInsights.connectionStringSecretRef: key {:?} of Secret {:?} not found",
                                ai.connection_string_secret_ref.key, ai.connection_string_secret_ref.name
                            ),
                        }
                    })?;
                    ConnectionString::parse(raw).map_err(|e| CollectorPlanError {
                        reason: reasons::INVALID_CONNECTION_STRING,
                        message: format!("platform connection string: {e}"),
                    })?;
                    secret_files.insert(
                        PLATFORM_CONNECTION_STRING_FILE.to_owned(),
                        raw.trim().to_owned(),
                    );
                    true
                }
                None => false,
            };
            Some(PlatformPlan { has_sink })
        }
        None => None,
    };

    // Without a selector the collector serves the tenants that allow its region. A selector
    // picks tenants explicitly: those not allowed here are accepted and dropped, counted.
    // Oldest first, so that of two tenants claiming one id the established one keeps it.
    let mut candidates: Vec<&TenantSource> = sources
        .tenants
        .iter()
        .filter(|t| selection.selects(&t.labels, &t.spec.regions))
        .collect();
    candidates.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));

    let mut routed = Vec::new();
    let mut excluded = Vec::new();
    let mut rejected = Vec::new();
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for tenant in candidates {
        let reject = |reason: &str, message: String| TenantRejection {
            name: tenant.name.clone(),
            tenant_id: tenant.spec.tenant_id.clone(),
            reason: reason.to_owned(),
            message,
        };
        if let Some((reason, message)) = vetoes.get(&tenant.name) {
            rejected.push(reject(reason, message.clone()));
            continue;
        }
        if let Err(e) = validate_tenant_spec(&tenant.spec) {
            rejected.push(reject(reasons::INVALID_SPEC.name, e.message));
            continue;
        }
        let id = tenant.spec.tenant_id.as_str();
        if let Some(owner) = claimed.get(id) {
            rejected.push(reject(
                reasons::DUPLICATE_TENANT_ID.name,
                format!("tenantId {id:?} is already used by TelemetryTenant {owner:?}"),
            ));
            continue;
        }
        claimed.insert(id, &tenant.name);
        let Some(hash) = tenant
            .password_hash
            .as_deref()
            .filter(|h| is_bcrypt_hash(h))
        else {
            rejected.push(reject(
                reasons::CREDENTIALS_PENDING.name,
                "the ingestion credential has not been issued yet".into(),
            ));
            continue;
        };

        let exclusion = if tenant.spec.suspend {
            Some(reasons::SUSPENDED.name)
        } else if !tenant.spec.regions.contains(&spec.region) {
            Some(reasons::REGION_NOT_ALLOWED.name)
        } else {
            None
        };
        if let Some(reason) = exclusion {
            // Accepted so the drop is counted by the collector instead of looking like a
            // wrong password to the client.
            htpasswd.insert(id.to_owned(), hash.to_owned());
            excluded.push(TenantExclusion {
                tenant_id: id.to_owned(),
                reason: reason.to_owned(),
            });
            continue;
        }

        let Some(raw) = tenant.connection_string.as_deref() else {
            rejected.push(reject(
                reasons::CONNECTION_STRING_PENDING.name,
                "the Application Insights connection string is not available yet".into(),
            ));
            continue;
        };
        if let Err(e) = ConnectionString::parse(raw) {
            rejected.push(reject(
                reasons::INVALID_CONNECTION_STRING.name,
                e.to_string(),
            ));
            continue;
        }
        htpasswd.insert(id.to_owned(), hash.to_owned());
        secret_files.insert(tenant_connection_string_file(id), raw.trim().to_owned());
        let redaction = tenant.spec.redaction.clone().unwrap_or_default();
        routed.push(RoutedTenant {
            tenant_id: id.to_owned(),
            tier: tenant.spec.tier,
            signals: tenant.spec.signals.clone(),
            blocked_values: dedup_against(
                &redaction.blocked_values,
                &spec.redaction.blocked_values,
            ),
            blocked_key_patterns: dedup_against(
                &redaction.blocked_key_patterns,
                &spec.redaction.blocked_key_patterns,
            ),
            sampling_percentage: tenant
                .spec
                .sampling
                .as_ref()
                .map(|s| s.percentage)
                .filter(|p| *p < 100.0),
            delivery_report_interval: tenant
                .spec
                .delivery_report
                .as_ref()
                .is_some_and(|report| report.enabled)
                .then(|| spec.delivery_report_interval.clone()),
        });
    }
    routed.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    excluded.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    rejected.sort_by(|a, b| a.name.cmp(&b.name));

    let htpasswd_file: String = htpasswd
        .iter()
        .map(|(user, hash)| format!("{user}:{hash}\n"))
        .collect();
    secret_files.insert(HTPASSWD_FILE.to_owned(), htpasswd_file);

    Ok(CollectorPlan {
        ports: spec.ports.clone(),
        baseline: spec.redaction.clone(),
        blob_containers,
        platform,
        unknown_tenant: spec.unknown_tenant,
        routed,
        excluded,
        rejected,
        secret_files,
        memory_limit_bytes,
        queue_volume_bytes,
    })
}

/// A tenant's own patterns, less those the baseline already applies.
fn dedup_against(tenant: &[String], baseline: &[String]) -> Vec<String> {
    let baseline: BTreeSet<&String> = baseline.iter().collect();
    let mut seen = BTreeSet::new();
    tenant
        .iter()
        .filter(|p| !baseline.contains(p) && seen.insert(*p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(spec: serde_json::Value) -> CollectorSources {
        serde_json::from_value(serde_json::json!({ "spec": spec, "tenants": [] })).unwrap()
    }

    #[test]
    fn quantities_that_are_not_bytes_refuse_the_collector_and_name_the_field() {
        for (spec, field) in [
            (
                serde_json::json!({ "region": "westeurope", "queueVolume": { "size": "lots" } }),
                "queueVolume.size",
            ),
            (
                serde_json::json!({ "region": "westeurope", "resources": { "limits": { "memory": "1GB" } } }),
                "resources.limits.memory",
            ),
        ] {
            let error = plan_collector(&sources(spec)).unwrap_err();
            assert_eq!(error.reason, reasons::INVALID_SPEC);
            assert!(error.message.starts_with(field), "{}", error.message);
        }
    }

    #[test]
    fn the_plan_carries_the_budget_inputs() {
        let plan = plan_collector(&sources(serde_json::json!({
            "region": "westeurope",
            "resources": { "limits": { "memory": "512Mi" } },
            "queueVolume": { "size": "2Gi" }
        })))
        .unwrap();
        assert_eq!(plan.memory_limit_bytes, 512 * 1024 * 1024);
        assert_eq!(plan.queue_volume_bytes, 2 * 1024 * 1024 * 1024);
    }

    fn tenant(id: &str, hash_suffix: char, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "tenantId": id, "regions": ["westeurope"],
            "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
        });
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        serde_json::json!({
            "name": id, "spec": spec,
            "passwordHash": format!("$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhW{hash_suffix}"),
            "connectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000001"
        })
    }

    #[test]
    fn only_tenants_that_ask_for_a_delivery_report_get_the_collectors_interval() {
        let sources: CollectorSources = serde_json::from_value(serde_json::json!({
            "spec": { "region": "westeurope", "deliveryReportInterval": "1h30m" },
            "tenants": [
                tenant("acme", 'b', serde_json::json!({ "deliveryReport": { "enabled": true } })),
                tenant("globex", 'c', serde_json::json!({ "deliveryReport": { "enabled": false } })),
                tenant("initech", 'd', serde_json::json!({ "deliveryReport": {} })),
                tenant("umbrella", 'e', serde_json::json!({})),
                tenant("paused", 'f', serde_json::json!({ "suspend": true, "deliveryReport": { "enabled": true } })),
            ]
        }))
        .unwrap();
        let plan = plan_collector(&sources).unwrap();
        let reports: Vec<(&str, Option<&str>)> = plan
            .routed
            .iter()
            .map(|t| (t.tenant_id.as_str(), t.delivery_report_interval.as_deref()))
            .collect();
        assert_eq!(
            reports,
            [
                ("acme", Some("1h30m")),
                ("globex", None),
                ("initech", None),
                ("umbrella", None)
            ]
        );
        assert_eq!(
            plan.excluded,
            [TenantExclusion {
                tenant_id: "paused".into(),
                reason: reasons::SUSPENDED.name.into()
            }]
        );
        // Without the field, the collector's default.
        let mut defaulted = sources.clone();
        defaulted.spec.delivery_report_interval =
            serde_json::from_value::<RegionalCollectorSpec>(serde_json::json!({ "region": "x" }))
                .unwrap()
                .delivery_report_interval;
        let plan = plan_collector(&defaulted).unwrap();
        assert_eq!(
            plan.routed[0].delivery_report_interval.as_deref(),
            Some("15m")
        );
    }

    #[test]
    fn a_delivery_report_interval_out_of_bounds_refuses_the_collector_and_says_why() {
        for (interval, says) in [
            ("500ms", "must be at least 1s and at most 24h"),
            ("25h", "must be at least 1s and at most 24h"),
            ("15 minutes", "is not a duration"),
        ] {
            let error = plan_collector(&sources(serde_json::json!({
                "region": "westeurope", "deliveryReportInterval": interval
            })))
            .unwrap_err();
            assert_eq!(error.reason, reasons::INVALID_SPEC);
            assert!(
                error
                    .message
                    .starts_with(&format!("deliveryReportInterval {interval:?}")),
                "{}",
                error.message
            );
            assert!(error.message.contains(says), "{}", error.message);
        }
    }

    #[test]
    fn the_fingerprint_moves_with_any_input_and_only_then() {
        let tenant = serde_json::json!({
            "name": "acme", "spec": { "tenantId": "acme", "regions": ["westeurope"],
                "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } } },
            "passwordHash": "$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWb",
            "connectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000001"
        });
        let of = |spec: serde_json::Value, tenant: &serde_json::Value| {
            let sources: CollectorSources =
                serde_json::from_value(serde_json::json!({ "spec": spec, "tenants": [tenant] }))
                    .unwrap();
            sources.fingerprint().unwrap()
        };
        let region = serde_json::json!({ "region": "westeurope" });
        let base = of(region.clone(), &tenant);
        assert_eq!(
            of(region.clone(), &tenant),
            base,
            "same sources, same fingerprint"
        );
        let mut rotated = tenant.clone();
        rotated["connectionString"] =
            "InstrumentationKey=00000000-0000-0000-0000-000000000002".into();
        assert_ne!(
            of(region.clone(), &rotated),
            base,
            "a new connection string"
        );
        let mut redacted = tenant.clone();
        redacted["spec"]["redaction"] = serde_json::json!({ "blockedValues": ["x"] });
        assert_ne!(of(region.clone(), &redacted), base, "a tenant's spec");
        let replicas = serde_json::json!({ "region": "westeurope", "replicas": 3 });
        assert_ne!(of(replicas, &tenant), base, "the collector's spec");
    }
}
