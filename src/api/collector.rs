//! `RegionalCollector`: the shared OpenTelemetry Collector of one region.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyRef, conditions_schema};

/// The telemux collector distribution's image (Dockerfile.collector), tagged with the version
/// install-collector.sh stamps into the distribution (`${OTELCOL_VERSION#v}-telemux`, from
/// e2e/collector/versions.env): the same build the operator validates configurations with. It
/// carries telemux's own exporter (`telemux_appinsights`), which upstream images lack. The
/// operator's `--collector-image` overrides it (the chart passes its `collector.image`).
pub const DEFAULT_COLLECTOR_IMAGE: &str = "telemux-otelcol:0.161.0-telemux";

/// Baseline: IPv4 addresses (seed 004's collector template).
pub const IPV4_PATTERN: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}";
/// Baseline: e-mail addresses (seed 004's collector template).
pub const EMAIL_PATTERN: &str = r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}";

/// The shared, authenticated OpenTelemetry Collector of one region. It serves every tenant of
/// its namespace that its selector picks, delivering only those allowed in its region.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "telemux.io",
    version = "v1alpha1",
    kind = "RegionalCollector",
    doc = "The shared OpenTelemetry Collector of one region, serving the tenants it selects.",
    plural = "regionalcollectors",
    singular = "regionalcollector",
    namespaced,
    status = "RegionalCollectorStatus",
    shortname = "rcol",
    shortname = "rcols",
    category = "telemux",
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Tenants","type":"integer","jsonPath":".status.tenantCount"}"#,
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".status.shardCount"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.unknownTenant != 'Platform' || (has(self.platform) && has(self.platform.applicationInsights))").message("unknownTenant: Platform needs platform.applicationInsights"))]
#[serde(rename_all = "camelCase")]
pub struct RegionalCollectorSpec {
    /// The region this collector processes telemetry in; tenants must list it in `regions`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub region: String,

    /// Collector pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// Collector image; defaults to the operator's collector image (`--collector-image`),
    /// the telemux collector distribution. It must carry every component telemux renders,
    /// including its `telemux_appinsights` exporter: upstream collector images do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Compute resources of the collector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// OTLP listening ports.
    #[serde(default)]
    pub ports: OtlpPorts,

    /// Which TelemetryTenants of this namespace the collector serves (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_selector: Option<LabelSelector>,

    /// Redaction applied to every tenant's telemetry before it leaves the collector.
    #[serde(default)]
    pub redaction: BaselineRedaction,

    /// A regional copy of all (already redacted) telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regional_storage: Option<RegionalStorage>,

    /// Accept the platform's own telemetry with a platform credential. Platform items are routed
    /// to the tenant named by their `tenant.id` attribute: the platform is the one client
    /// trusted to set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,

    /// What happens to platform items whose `tenant.id` names no tenant of this collector.
    #[serde(default)]
    pub unknown_tenant: UnknownTenantPolicy,

    /// How the tenants are split over collector shards: each shard is its own StatefulSet,
    /// ConfigMap, Secret and Service, and a tenant keeps its shard for life.
    #[serde(default)]
    pub sharding: Sharding,

    /// A HorizontalPodAutoscaler per shard, as the OpenTelemetry Operator's `autoscaler`
    /// offers: each shard's StatefulSet scales between `minReplicas` and `maxReplicas` on its
    /// pods' CPU (and optionally memory) use, and `replicas` no longer sets its size. The
    /// utilization targets are percentages of the pods' requests (`resources.requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Additions to the collector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,

    /// The volume each collector pod keeps its exporters' queues on: a PersistentVolumeClaim
    /// per pod, which outlives restarts and rollouts, so what the collector acknowledged is
    /// not lost while a tenant's App Insights is unreachable. Fixed once created.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("queueVolume is immutable: it is the collector StatefulSet's volume claim template"))]
    pub queue_volume: QueueVolume,

    /// How often a tenant's exporter sends the tenant its delivery report, for the tenants that
    /// ask for one (`TelemetryTenant.spec.deliveryReport.enabled`): a duration such as `15m`,
    /// `1h` or `90s` (units h, m, s, ms, us, ns), at least 1s and at most 24h. Each report holds
    /// the counts of the interval that ended.
    #[serde(default = "default_delivery_report_interval")]
    #[schemars(
        length(min = 2, max = 64),
        regex(pattern = "^([0-9]+(\\.[0-9]+)?(h|m|s|ms|us|ns))+$")
    )]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("deliveryReportInterval must be at least 1s and at most 24h"))]
    pub delivery_report_interval: String,
}

/// The Azure SDKs' default statistics interval.
pub const DEFAULT_DELIVERY_REPORT_INTERVAL: &str = "15m";

fn default_delivery_report_interval() -> String {
    DEFAULT_DELIVERY_REPORT_INTERVAL.to_owned()
}

/// Each shard's HorizontalPodAutoscaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Fewest pods per shard.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most pods per shard.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU use the autoscaler keeps, in percent of the pods' CPU request.
    #[serde(
        default = "default_target_cpu_utilization",
        rename = "targetCPUUtilization"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
    /// Average memory use the autoscaler keeps, in percent of the pods' memory request; not
    /// a target when left out (memory_limiter already bounds each pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization: Option<i32>,
}

fn default_min_replicas() -> i32 {
    1
}

/// The OpenTelemetry Operator's default target, for the same collector.
fn default_target_cpu_utilization() -> i32 {
    90
}

/// How tenants are split over shards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sharding {
    /// At most this many tenants per shard. New tenants go to the least-full shard with room;
    /// a new shard opens when all are full. Lowering it moves no tenant: full shards just take
    /// no more. 200 keeps a shard's configuration near 260 KiB (a ConfigMap holds 1 MiB) and
    /// its collector's start-up near 3 s.
    #[serde(default = "default_max_tenants_per_shard")]
    #[schemars(range(min = 1, max = 500))]
    pub max_tenants_per_shard: u32,
}

fn default_max_tenants_per_shard() -> u32 {
    200
}

impl Default for Sharding {
    fn default() -> Self {
        Sharding {
            max_tenants_per_shard: default_max_tenants_per_shard(),
        }
    }
}

/// The collector pods' queue volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueVolume {
    /// Capacity of each pod's claim. The tenants' queue budgets (by tier) are scaled down to
    /// fit it.
    #[serde(default = "default_queue_volume_size")]
    pub size: Quantity,
    /// StorageClass of the claims; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_queue_volume_size() -> Quantity {
    Quantity("10Gi".into())
}

impl Default for QueueVolume {
    fn default() -> Self {
        QueueVolume {
            size: default_queue_volume_size(),
            storage_class_name: None,
        }
    }
}

fn default_replicas() -> i32 {
    2
}

/// OTLP ports of the collector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtlpPorts {
    #[serde(default = "default_grpc_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: i32,
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
}

fn default_grpc_port() -> i32 {
    crate::layout::DEFAULT_OTLP_GRPC_PORT
}

fn default_http_port() -> i32 {
    crate::layout::DEFAULT_OTLP_HTTP_PORT
}

impl Default for OtlpPorts {
    fn default() -> Self {
        OtlpPorts {
            grpc: default_grpc_port(),
            http: default_http_port(),
        }
    }
}

/// The collector's baseline redaction, applied to every tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRedaction {
    /// Regular expressions (RE2) for values to mask. Default: IPv4 and e-mail addresses.
    #[serde(default = "default_blocked_values")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub blocked_values: Vec<String>,
    /// Regular expressions (RE2) for attribute keys whose values are masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub blocked_key_patterns: Vec<String>,
}

fn default_blocked_values() -> Vec<String> {
    vec![IPV4_PATTERN.to_owned(), EMAIL_PATTERN.to_owned()]
}

impl Default for BaselineRedaction {
    fn default() -> Self {
        BaselineRedaction {
            blocked_values: default_blocked_values(),
            blocked_key_patterns: Vec::new(),
        }
    }
}

/// Regional storage of all tenants' (redacted) telemetry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionalStorage {
    /// Azure Blob Storage.
    pub azure_blob: AzureBlobStorage,
}

/// An Azure Blob Storage account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureBlobStorage {
    /// Secret key holding the storage account's connection string.
    pub connection_string_secret_ref: SecretKeyRef,
    /// Container per signal; the containers must exist.
    #[serde(default)]
    pub containers: BlobContainers,
}

/// Blob container per signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobContainers {
    #[serde(default = "traces")]
    #[schemars(length(min = 3, max = 63))]
    pub traces: String,
    #[serde(default = "logs")]
    #[schemars(length(min = 3, max = 63))]
    pub logs: String,
    #[serde(default = "metrics")]
    #[schemars(length(min = 3, max = 63))]
    pub metrics: String,
}

fn traces() -> String {
    "traces".into()
}
fn logs() -> String {
    "logs".into()
}
fn metrics() -> String {
    "metrics".into()
}

impl Default for BlobContainers {
    fn default() -> Self {
        BlobContainers {
            traces: traces(),
            logs: logs(),
            metrics: metrics(),
        }
    }
}

/// The platform's own access to the collector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSpec {
    /// The platform's own Application Insights: platform items that name no tenant (its own
    /// telemetry) go here, and, with `unknownTenant: Platform`, those naming a tenant this
    /// collector does not serve. Items naming a served tenant go to that tenant only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights: Option<super::tenant::ExistingApplicationInsights>,
}

/// Handling of platform items whose tenant is unknown to the collector.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnknownTenantPolicy {
    /// Drop them.
    #[default]
    Drop,
    /// Deliver them to the platform's own Application Insights only.
    Platform,
}

/// Additions to the collector pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// What telemux observed and did for the collector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionalCollectorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ConfigValid and Available.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// SHA-256 of the rendered collector configuration now rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Collector pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Number of tenants routed.
    #[serde(default)]
    pub tenant_count: i32,
    /// Tenant ids routed, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed_tenants: Vec<String>,
    /// Tenants accepted but whose telemetry is dropped here (suspended, or not allowed in this
    /// region).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_tenants: Vec<TenantExclusion>,
    /// Tenants left out of the configuration, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_tenants: Vec<TenantRejection>,
    /// Number of shards.
    #[serde(default)]
    pub shard_count: i32,
    /// The collector's shards, by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardStatus>,
}

/// One shard of a collector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Part of the shard's object names; stable for the shard's life.
    pub index: u32,
    /// Tenants the shard serves (routed or accepted and dropped).
    pub tenant_count: i32,
    /// Shard pods ready.
    pub ready_replicas: i32,
    /// SHA-256 of the shard's rolled-out configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// A tenant accepted by the collector whose telemetry is dropped here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantExclusion {
    pub tenant_id: String,
    /// `Suspended` or `RegionNotAllowed`.
    pub reason: String,
}

/// A tenant left out of the collector's configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRejection {
    /// The TelemetryTenant's name.
    pub name: String,
    pub tenant_id: String,
    pub reason: String,
    pub message: String,
}
