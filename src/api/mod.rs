//! The custom resources telemux serves (group `telemux.io`, version `v1alpha1`).
//!
//! The Rust types are the source of truth: `telemux crds` prints the CRDs generated from them
//! and `make crds` writes them to `crds/`.

pub mod collector;
pub mod common;
pub mod delivery;
pub mod reasons;
pub mod tenant;

pub use collector::{RegionalCollector, RegionalCollectorSpec, RegionalCollectorStatus};
pub use common::{SecretKeyRef, condition_types};
pub use tenant::{TelemetryTenant, TelemetryTenantSpec, TelemetryTenantStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every telemux resource.
pub const GROUP: &str = "telemux.io";

/// Every CRD telemux installs, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![TelemetryTenant::crd(), RegionalCollector::crd()]
}

/// Each CRD with the file name it has under `crds/`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    all_crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((format!("{name}.yaml"), serde_saphyr::to_string(crd)?))
        })
        .collect()
}
