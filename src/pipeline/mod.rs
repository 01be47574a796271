//! Pure functions from resources to collector configuration.
//!
//! `plan` decides which tenants a collector routes, excludes or rejects, and what its Secret
//! holds; `render` turns a plan into collector YAML. Same input, same bytes.

pub mod delivery;
pub mod plan;
pub mod render;
pub mod selection;

pub use plan::{
    CollectorPlan, CollectorSources, TenantSource, Vetoes, plan_collector,
    plan_collector_with_vetoes,
};
pub use render::{RenderedConfig, render_collector_config};

/// Where the collector's Secret is mounted in its pods.
pub const SECRETS_DIR: &str = "/etc/telemux/secrets";
/// Where the collector's queue volume is mounted in its pods: every exporter's persistent
/// sending queue, which must outlive the pod's containers and rollouts.
pub const QUEUE_DIR: &str = "/var/lib/telemux/queue";
/// Where the collector's ConfigMap is mounted in its pods.
pub const CONFIG_DIR: &str = "/etc/telemux/config";
/// Key of the configuration in the ConfigMap.
pub const CONFIG_FILE: &str = "config.yaml";
/// Key of the htpasswd file in the collector's Secret.
pub const HTPASSWD_FILE: &str = "htpasswd";
/// Key of the regional Blob Storage connection string in the collector's Secret.
pub const BLOB_CONNECTION_STRING_FILE: &str = "regional-blob.connection-string";
/// Key of the platform's App Insights connection string in the collector's Secret.
pub const PLATFORM_CONNECTION_STRING_FILE: &str = "platform.connection-string";
/// The authenticated user name of the platform. Tenant ids are DNS labels, which cannot hold
/// an underscore, so no tenant can ever authenticate as the platform.
pub const PLATFORM_USER: &str = "_platform";
/// Health check port of the collector.
pub const HEALTH_PORT: i32 = 13133;
/// Port of the collector's own Prometheus metrics.
pub const METRICS_PORT: i32 = 8888;

/// Key of a tenant's connection string in the collector's Secret.
pub fn tenant_connection_string_file(tenant_id: &str) -> String {
    format!("tenant-{tenant_id}.connection-string")
}
