//! The reconcilers' writes and reads against the API server: server-side apply of children and
//! status, Secret reads, events. Nothing here decides anything.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Error, Result};
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

/// A key of a user's Secret: remembered while the Secret's resourceVersion (from the
/// metadata watch) stays the same, read from the API otherwise.
pub async fn read_user_secret_key(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<SecretLookup> {
    let remembered = ctx
        .secret_version(namespace, name)
        .and_then(|version| ctx.user_secret_values.get(namespace, name, key, &version));
    if let Some(lookup) = remembered {
        return Ok(lookup);
    }
    let secret = read_secret(&ctx.client, namespace, name).await?;
    let lookup = lookup_key(secret.as_ref(), key);
    let version = secret.and_then(|s| s.metadata.resource_version);
    let read = version.map(|v| (v, lookup.clone()));
    ctx.user_secret_values.remember(namespace, name, key, read);
    Ok(lookup)
}

fn lookup_key(secret: Option<&Secret>, key: &str) -> SecretLookup {
    match secret {
        None => SecretLookup::SecretNotFound,
        Some(secret) => match secret_value(secret, key) {
            Some(value) => SecretLookup::Found(value),
            None => SecretLookup::KeyNotFound,
        },
    }
}

/// Reads a Secret from the API (not a cache): a lagging cache must never cause a credential
/// to be issued again.
pub async fn read_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

/// A namespaced object the API can read back: what every write here takes.
pub trait Object:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + DeserializeOwned
    + Clone
    + std::fmt::Debug
{
}

impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
{
}

fn name_of<K: Resource>(object: &K) -> Result<String> {
    object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))
}

fn namespace_of<K: Resource>(object: &K) -> Result<String> {
    object
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))
}

/// Creates an object; false when one of that name exists already.
pub async fn create<K>(client: &Client, object: &K) -> Result<bool>
where
    K: Object + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &namespace_of(object)?);
    let params = kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..kube::api::PostParams::default()
    };
    match api.create(&params, object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Server-side apply of a whole object under telemux's field manager. An apply that changes
/// nothing is not persisted by the API server, so children keep their resourceVersion.
pub async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Object + Serialize,
{
    apply_value(client, namespace, &name_of(object)?, applied_value(object)?).await
}

/// An object as server-side apply takes it: apiVersion and kind are required.
fn applied_value<K>(object: &K) -> Result<serde_json::Value>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut value = serde_json::to_value(object).map_err(|e| Error::Serialize("object", e))?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    Ok(value)
}

async fn apply_value<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    value: serde_json::Value,
) -> Result<K>
where
    K: Object,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(name, &params, &kube::api::Patch::Apply(value))
        .await?)
}

/// Server-side apply of a collector's child, skipped when this process applied the very same
/// object last and `live_version` (from a watch, or a list) is still the version that apply
/// left: nobody has changed the child since, so the apply would change nothing. Anyone else's
/// change moves the version and is applied over. Returns the object as applied, or `None` when
/// skipped.
pub async fn apply_child<K>(
    ctx: &Context,
    namespace: &str,
    object: &K,
    live_version: Option<String>,
) -> Result<Option<K>>
where
    K: Object + Serialize,
{
    let name = name_of(object)?;
    let value = applied_value(object)?;
    let fingerprint = fingerprint_of(&value)?;
    let key = format!("{}/{namespace}/{name}", K::kind(&()));
    if ctx
        .applied_children
        .is_current(&key, fingerprint, live_version.as_deref())
    {
        return Ok(None);
    }
    let applied: K = apply_value(&ctx.client, namespace, &name, value).await?;
    let version = applied.meta().resource_version.clone();
    ctx.applied_children.record(key, fingerprint, version);
    Ok(Some(applied))
}

/// A fingerprint of an object as sent: the same object serializes to the same bytes.
fn fingerprint_of(value: &serde_json::Value) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Serialize("object", e))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(hasher.finish())
}

/// Server-side apply of a Secret, skipped when `live` (the watch cache) already holds it
/// (`holds`). Every trigger of a tenant reconciles it, and a no-op apply still costs the API
/// server a full merge: at thousands of tenants those were most of its work.
pub async fn apply_secret(client: &Client, live: Option<&Secret>, desired: &Secret) -> Result<()> {
    if live.is_some_and(|live| holds(live, desired)) {
        return Ok(());
    }
    apply(client, &namespace_of(desired)?, desired)
        .await
        .map(drop)
}

/// Whether applying `desired` would leave `live` as it is: the same type and data (no key
/// more or less, which an apply would remove or add), the same owners, and every label and
/// annotation of `desired` (others may add their own).
pub fn holds(live: &Secret, desired: &Secret) -> bool {
    fn includes(
        live: Option<&BTreeMap<String, String>>,
        desired: Option<&BTreeMap<String, String>>,
    ) -> bool {
        desired
            .into_iter()
            .flatten()
            .all(|(k, v)| live.and_then(|l| l.get(k)) == Some(v))
    }
    let (l, d) = (&live.metadata, &desired.metadata);
    desired.string_data.is_none()
        && live.type_ == desired.type_
        && live.data.as_ref().filter(|m| !m.is_empty())
            == desired.data.as_ref().filter(|m| !m.is_empty())
        && l.owner_references.as_deref().unwrap_or_default()
            == d.owner_references.as_deref().unwrap_or_default()
        && includes(l.labels.as_ref(), d.labels.as_ref())
        && includes(l.annotations.as_ref(), d.annotations.as_ref())
}

/// Server-side apply of a status. Fields left out (an emptied list) are removed.
pub async fn apply_status<K, S>(client: &Client, object: &K, status: &S) -> Result<()>
where
    K: Object,
    S: Serialize,
{
    let (name, namespace) = (name_of(object)?, namespace_of(object)?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn secret(data: &[(&str, &str)]) -> Secret {
        let mut secret = Secret {
            type_: Some("Opaque".into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        secret.metadata.labels = Some(BTreeMap::from([("app".into(), "telemux".into())]));
        secret.metadata.owner_references = Some(vec![OwnerReference {
            name: "acme".into(),
            uid: "1".into(),
            ..OwnerReference::default()
        }]);
        secret
    }

    #[test]
    fn a_secret_as_desired_is_held_whatever_others_added_to_its_metadata() {
        let desired = secret(&[("password", "p")]);
        let mut live = desired.clone();
        live.metadata.resource_version = Some("7".into());
        live.metadata.annotations = Some(BTreeMap::from([("shard".into(), "2".into())]));
        live.metadata
            .labels
            .get_or_insert_default()
            .insert("extra".into(), "x".into());
        assert!(holds(&live, &desired));
    }

    #[test]
    fn any_difference_an_apply_would_make_is_not_held() {
        let desired = secret(&[("password", "p"), ("endpoint.eu.grpc", "e")]);
        let changed_value = secret(&[("password", "q"), ("endpoint.eu.grpc", "e")]);
        let missing_key = secret(&[("password", "p")]);
        let extra_key = secret(&[("password", "p"), ("endpoint.eu.grpc", "e"), ("x", "y")]);
        let mut other_owner = desired.clone();
        other_owner.metadata.owner_references = None;
        let mut label_changed = desired.clone();
        label_changed.metadata.labels = Some(BTreeMap::from([("app".into(), "other".into())]));
        let mut other_type = desired.clone();
        other_type.type_ = Some("kubernetes.io/basic-auth".into());
        for live in [
            changed_value,
            missing_key,
            extra_key,
            other_owner,
            label_changed,
            other_type,
        ] {
            assert!(!holds(&live, &desired), "{live:?}");
        }
    }
}
