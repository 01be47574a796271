//! `TelemetryTenant`: one customer of the platform and the pipeline it is owed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyRef, conditions_schema};

/// A DNS label: lowercase alphanumerics and '-', starting and ending alphanumeric.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// One customer: who it is, where its telemetry may be processed, where it is delivered and
/// what must be redacted on the way.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "telemux.io",
    version = "v1alpha1",
    kind = "TelemetryTenant",
    doc = "A customer of the platform: its telemetry pipeline, App Insights and redaction.",
    plural = "telemetrytenants",
    singular = "telemetrytenant",
    namespaced,
    status = "TelemetryTenantStatus",
    shortname = "ttenant",
    shortname = "ttenants",
    category = "telemux",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantId"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Regions","type":"string","jsonPath":".spec.regions"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Delivering","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Delivering\")].reason"}"#,
    printcolumn = r#"{"name":"Last-Delivery","type":"date","priority":1,"jsonPath":".status.delivery.lastSuccessTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryTenantSpec {
    /// The tenant's stable identifier: a DNS label, unique within the namespace. It is stamped
    /// as `tenant.id` on every item the tenant sends and names its pipeline in the collectors.
    /// Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("tenantId is immutable"))]
    pub tenant_id: String,

    /// Service tier; it sizes the tenant's export queue (free: 1000 batches, standard: 5000,
    /// premium: 20000).
    #[serde(default)]
    pub tier: Tier,

    /// Regions where the tenant's telemetry may be processed (data residency). A collector of
    /// any other region drops what this tenant sends it.
    #[schemars(schema_with = "regions_schema")]
    pub regions: Vec<String>,

    /// Stop delivering this tenant's telemetry: collectors accept and drop it (counted).
    #[serde(default)]
    pub suspend: bool,

    /// Where the tenant's telemetry is delivered.
    pub application_insights: ApplicationInsightsSpec,

    /// Redaction applied to this tenant's telemetry in addition to the collector's baseline.
    /// A tenant can tighten the baseline, never loosen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<TenantRedaction>,

    /// Head sampling of traces and logs for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,

    /// Which signals are delivered (all by default).
    #[serde(default)]
    pub signals: Signals,

    /// A delivery report in the tenant's own Application Insights (off by default): every
    /// interval (its collectors' `deliveryReportInterval`, 15m by default) each collector
    /// delivering for the tenant sends the tenant's App Insights `Item_Success_Count`,
    /// `Item_Dropped_Count` and `Item_Retry_Count` (MetricData, per telemetry type, with drop
    /// and retry codes and reasons) for the tenant's own items it delivered, dropped and
    /// retried in that interval, and nothing of any other tenant: what the Azure SDKs send as
    /// "SDK stats" (`customMetrics`, the SDK stats workbook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_report: Option<DeliveryReport>,
}

fn regions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 63,
            "pattern": DNS_LABEL_PATTERN
        }
    })
}

/// Service tier.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    #[default]
    Standard,
    Premium,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }
}

/// The tenant's Application Insights: provisioned by telemux, or an existing one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.provision) != has(self.existing)").message("set exactly one of applicationInsights.provision or applicationInsights.existing"))]
pub struct ApplicationInsightsSpec {
    /// Create and manage an Application Insights component through Azure Resource Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<ProvisionSpec>,
    /// Use an existing Application Insights component whose connection string is in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingApplicationInsights>,
}

/// An Application Insights component that telemux creates in Azure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionSpec {
    /// Azure subscription id (a GUID).
    #[schemars(regex(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub subscription_id: String,
    /// Resource group the component lives in (must exist).
    #[schemars(length(min = 1, max = 90))]
    pub resource_group: String,
    /// Azure location, e.g. `westeurope`. Cannot change once created.
    #[schemars(length(min = 1, max = 64))]
    pub location: String,
    /// Component name; defaults to a name derived from the namespace and tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,
    /// Resource id of the Log Analytics workspace backing the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_resource_id: Option<String>,
    /// Data retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "retention_schema")]
    pub retention_in_days: Option<i32>,
    /// Disable instrumentation-key (local) authentication for ingestion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_local_auth: Option<bool>,
    /// Where the component stores its data; Azure's default is `LogAnalytics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_mode: Option<IngestionMode>,
    /// What happens to the component when the TelemetryTenant is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn retention_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "format": "int32",
        "enum": [30, 60, 90, 120, 180, 270, 365, 550, 730]
    })
}

/// Where an Application Insights component stores its data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IngestionMode {
    ApplicationInsights,
    ApplicationInsightsWithDiagnosticSettings,
    LogAnalytics,
}

impl IngestionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IngestionMode::ApplicationInsights => "ApplicationInsights",
            IngestionMode::ApplicationInsightsWithDiagnosticSettings => {
                "ApplicationInsightsWithDiagnosticSettings"
            }
            IngestionMode::LogAnalytics => "LogAnalytics",
        }
    }
}

/// What to do with a provisioned component when its tenant is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the component (and its data) in Azure.
    #[default]
    Retain,
    /// Delete the component from Azure.
    Delete,
}

/// An existing Application Insights component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExistingApplicationInsights {
    /// Secret key holding the component's connection string
    /// (`InstrumentationKey=...;IngestionEndpoint=...`).
    pub connection_string_secret_ref: SecretKeyRef,
}

/// Extra redaction for one tenant, on top of its collectors' baseline.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRedaction {
    /// Regular expressions (RE2 syntax); any matching part of an attribute value is masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub blocked_values: Vec<String>,
    /// Regular expressions (RE2 syntax); attributes whose key matches have their value masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub blocked_key_patterns: Vec<String>,
}

/// Head sampling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sampling {
    /// Percentage of traces and logs kept, greater than 0 and at most 100.
    #[schemars(range(min = 0.0, max = 100.0))]
    #[x_kube(validation = Rule::new("self > 0.0").message("sampling.percentage must be greater than 0"))]
    pub percentage: f64,
}

/// Which signals are delivered to the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signals {
    #[serde(default = "enabled")]
    pub traces: bool,
    #[serde(default = "enabled")]
    pub logs: bool,
    #[serde(default = "enabled")]
    pub metrics: bool,
}

fn enabled() -> bool {
    true
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            traces: true,
            logs: true,
            metrics: true,
        }
    }
}

/// The tenant's delivery report (see `TelemetryTenantSpec::delivery_report`). Rendered as the
/// `delivery_report` section of the tenant's `telemux_appinsights` exporter only, never of the
/// platform's, so a report holds only the tenant's own figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    /// Send the report (false by default). A suspended or region-excluded tenant gets none
    /// from the collectors that drop its telemetry.
    #[serde(default)]
    pub enabled: bool,
}

/// What telemux observed and did for the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryTenantStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, CredentialsReady, ApplicationInsightsReady and Routed.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Secret (keys `username`, `password`) the tenant's apps authenticate to collectors with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Secret holding the connection string the collectors deliver with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string_secret: Option<String>,
    /// Azure resource id of the provisioned Application Insights component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights_resource_id: Option<String>,
    /// RegionalCollectors that currently route this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collectors: Vec<String>,
    /// Where the tenant's apps send, per region: the Service of its shard of each collector
    /// that selects it. The credentials Secret carries the same as `endpoint.<region>.grpc`
    /// and `endpoint.<region>.http`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<TenantEndpoint>,
    /// What the collectors did with the tenant's telemetry: accepted, delivered, dropped by
    /// reason, retried; since creation and over the last 15 minutes. Written by the operator's
    /// collection of the collectors' counters (its own field manager), not by the reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::api::delivery::DeliveryStatus>,
}

/// The tenant's shard of one collector, and its addresses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantEndpoint {
    pub region: String,
    pub collector: String,
    /// The shard of the collector that serves the tenant, for life.
    pub shard: u32,
    /// OTLP/gRPC address (`host:port`).
    pub grpc: String,
    /// OTLP/HTTP base URL.
    pub http: String,
}
