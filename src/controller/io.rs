//! The reconcilers' writes and reads against the API server: server-side apply of children and
//! status, Secret reads, events. Nothing here decides anything.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Result};
use crate::api::reasons;
use crate::resources::FIELD_MANAGER;

/// Publishes an event: a Warning when its reason asks for action (`crate::api::reasons`), else
/// Normal. Failing to publish is logged, never fatal.
pub async fn publish_event<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if reasons::kind_of(reason).is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish event");
    }
}

/// A Secret key as UTF-8 text (`data`, or `stringData` on objects not yet normalized).
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

/// What reading a key of a user's Secret found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretLookup {
    Found(String),
    SecretNotFound,
    KeyNotFound,
}

impl SecretLookup {
    pub fn found(self) -> Option<String> {
        match self {
            SecretLookup::Found(value) => Some(value),
            SecretLookup::SecretNotFound | SecretLookup::KeyNotFound => None,
        }
    }
}

/// Reads a key of a Secret from the API (not a cache).
pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<SecretLookup> {
    Ok(match read_secret(client, namespace, name).await? {
        None => SecretLookup::SecretNotFound,
        Some(secret) => match secret_value(&secret, key) {
            Some(value) => SecretLookup::Found(value),
            None => SecretLookup::KeyNotFound,
        },
    })
}

/// Reads a Secret from the API (not a cache): a lagging cache must never cause a credential
/// to be issued again.
pub async fn read_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

/// Server-side apply of a whole object under telemux's field manager. An apply that changes
/// nothing is not persisted by the API server, so children keep their resourceVersion.
pub async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut value = serde_json::to_value(object).map_err(|e| Error::Serialize("object", e))?;
    // apiVersion and kind are required by server-side apply.
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&name, &params, &kube::api::Patch::Apply(value))
        .await?)
}

/// Server-side apply of a status. Fields left out (an emptied list) are removed.
pub async fn apply_status<K, S>(client: &Client, object: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
    S: Serialize,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let namespace = object
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let status = serde_json::to_value(status).map_err(|e| Error::Serialize("status", e))?;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&name, &params, &kube::api::Patch::Apply(patch))
        .await?;
    Ok(())
}
