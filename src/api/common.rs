//! Types shared by both resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the same namespace as the referring resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The condition types telemux reports.
pub mod condition_types {
    /// Everything below holds: the resource does what its spec asks.
    pub const READY: &str = "Ready";
    /// Tenant: the ingestion credential Secret exists.
    pub const CREDENTIALS_READY: &str = "CredentialsReady";
    /// Tenant: a valid connection string for its App Insights is in place.
    pub const APPLICATION_INSIGHTS_READY: &str = "ApplicationInsightsReady";
    /// Tenant: at least one RegionalCollector routes its telemetry.
    pub const ROUTED: &str = "Routed";
    /// Tenant: App Insights accepted its telemetry lately, as the collectors count (written
    /// by the collection of delivery figures, not by the reconcile; not part of `Ready`).
    pub const DELIVERING: &str = "Delivering";
    /// Collector: the rendered configuration was accepted.
    pub const CONFIG_VALID: &str = "ConfigValid";
    /// Collector: its StatefulSet has the requested replicas available and up to date.
    pub const AVAILABLE: &str = "Available";
}

/// Wraps the `conditions` list so the CRD marks it as a list-map keyed by `type`, which lets
/// server-side apply merge conditions owned by different writers.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), "map".into());
        obj.insert(
            "x-kubernetes-list-map-keys".into(),
            serde_json::json!(["type"]),
        );
    }
    schema
}
