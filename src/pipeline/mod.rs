//! Pure functions from resources to collector configuration.
//!
//! `plan` decides which tenants a collector routes, excludes or rejects, and what its Secret
//! holds; `render` turns a plan into collector YAML. Same input, same bytes.

pub mod delivery;
pub mod plan;
pub mod render;
pub mod selection;
pub mod shards;

pub use plan::{
    CollectorPlan, CollectorSources, TenantSource, Vetoes, plan_collector,
    plan_collector_with_vetoes,
};
pub use render::{RenderedConfig, component_ids, render_collector_config};

// The collector pod's layout lives in `crate::layout`; `render` imports these from here.
pub use crate::layout::{
    BLOB_CONNECTION_STRING_FILE, HEALTH_PORT, HTPASSWD_FILE, METRICS_PORT,
    PLATFORM_CONNECTION_STRING_FILE, PLATFORM_USER, QUEUE_DIR, SECRETS_DIR,
    tenant_connection_string_file,
};
