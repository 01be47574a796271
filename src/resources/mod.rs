//! Pure builders of the Kubernetes objects telemux owns. Each takes the resource it belongs to
//! and returns the full desired object for server-side apply.

pub mod collector;
pub mod tenant;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

/// The field manager of every write telemux makes.
pub const FIELD_MANAGER: &str = "telemux";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_TENANT: &str = "telemux.io/tenant";
pub const LABEL_COLLECTOR: &str = "telemux.io/collector";
pub const LABEL_REGION: &str = "telemux.io/region";
/// The shard of a collector an object belongs to.
pub const LABEL_SHARD: &str = "telemux.io/shard";

/// Pod-template annotations whose change rolls the collector pods.
pub const ANNOTATION_CONFIG_HASH: &str = "telemux.io/config-hash";
pub const ANNOTATION_SECRET_HASH: &str = "telemux.io/secret-hash";

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.insert(LABEL_MANAGED_BY.into(), "telemux".into());
    labels
}

/// A controller owner reference, so children are garbage collected with their owner.
pub(crate) fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}
