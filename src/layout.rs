//! The collector pod's contract: where its files are mounted, what the Secret's files are
//! called, which ports it listens on and which variables it must not inherit. What telemux
//! renders, the pod it builds, the validator and the test kit all read it from here, so that a
//! change of one path or name is a change of all of them.

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
/// OTLP/gRPC port of a collector whose spec names none.
pub const DEFAULT_OTLP_GRPC_PORT: i32 = 4317;
/// OTLP/HTTP port of a collector whose spec names none.
pub const DEFAULT_OTLP_HTTP_PORT: i32 = 4318;
/// Azure Monitor SDKs and the contrib exporter fall back to this variable when a connection
/// string is empty; a collector run outside its pod must not inherit one from the shell, or a
/// misconfigured exporter could deliver to the wrong place.
pub const CONNECTION_STRING_ENV: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";

/// Key of a tenant's connection string in the collector's Secret.
pub fn tenant_connection_string_file(tenant_id: &str) -> String {
    format!("tenant-{tenant_id}.connection-string")
}
