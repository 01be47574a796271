//! The reconcilers and what they share. All IO with the API server lives here.

pub mod collector;
pub mod conditions;
pub mod provision;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{RegionalCollector, TelemetryTenant};
use crate::resources::FIELD_MANAGER;

/// Everything a reconcile may go wrong with. Problems of the user's spec are not errors: they
/// become conditions. These are the failures worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Credential(#[from] crate::credentials::HashError),
    #[error(transparent)]
    Render(#[from] crate::pipeline::render::RenderError),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("could not serialize {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
    #[error("Azure: {0}")]
    Azure(#[from] crate::azure::AzureError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Credential(_) => "credential",
            Error::Render(_) => "render",
            Error::MissingField(_) => "missing_field",
            Error::Serialize(..) => "serialize",
            Error::Azure(_) => "azure",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub tenants: Store<TelemetryTenant>,
    pub collectors: Store<RegionalCollector>,
    /// Secrets telemux wrote (labelled managed-by=telemux), from a watch.
    pub managed_secrets: Store<Secret>,
    pub settings: Settings,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Checks configurations before rollout, when a collector binary is configured.
    pub validator: Option<Arc<dyn crate::validator::ConfigValidator>>,
    /// Verdicts by config hash: a configuration is checked once, not at every reconcile.
    pub verdicts: std::sync::Mutex<std::collections::HashMap<String, crate::validator::Verdict>>,
    /// Config hash each collector was last rolled out with by this process, so a rollout is
    /// announced once even when the status cache lags behind.
    pub rolled_out: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// When each provisioned tenant's component was last verified in Azure, and for which
    /// generation: other reconciles of the tenant then need no ARM call.
    pub components_verified:
        std::sync::Mutex<std::collections::HashMap<String, (i64, std::time::Instant)>>,
}

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Trailing-edge debounce of collector reconciles: a burst of tenant changes within this
    /// window produces one render and at most one rollout per collector.
    pub collector_debounce: Duration,
    /// How often objects are re-checked even when nothing changed (drift, lost events).
    pub resync: Duration,
    /// Collector binary whose `validate` checks every new configuration before rollout.
    pub collector_binary: Option<std::path::PathBuf>,
    /// Image of the collector pods of RegionalCollectors whose spec names no `image`.
    pub collector_image: String,
    /// Azure Resource Manager access, for tenants whose App Insights telemux provisions.
    pub azure: Option<provision::AzureComponents>,
    pub provision_timings: provision::ProvisionTimings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            collector_debounce: Duration::from_secs(2),
            resync: Duration::from_secs(300),
            collector_binary: None,
            collector_image: crate::api::collector::DEFAULT_COLLECTOR_IMAGE.to_owned(),
            azure: None,
            provision_timings: provision::ProvisionTimings::default(),
        }
    }
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        settings: Settings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let settings_validator = settings.collector_binary.clone().map(|path| {
            Arc::new(crate::validator::CollectorBinary {
                path,
                timeout: Duration::from_secs(30),
            }) as Arc<dyn crate::validator::ConfigValidator>
        });
        // Every ARM request is counted by operation and outcome.
        let mut settings = settings;
        if let Some(azure) = settings.azure.take() {
            settings.azure = Some(provision::AzureComponents(Arc::new(
                crate::azure::metered::MeteredComponents::new(azure.0, metrics.clone()),
            )));
        }
        let reporter = Reporter {
            controller: "telemux".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tenants: stores.tenants,
            collectors: stores.collectors,
            managed_secrets: stores.managed_secrets,
            settings,
            metrics,
            rolled_out: Default::default(),
            components_verified: Default::default(),
            validator: settings_validator,
            verdicts: Default::default(),
        })
    }

    /// Publishes an event; failing to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }

    /// The verdict on a configuration, checked once per config hash.
    pub async fn verdict(
        &self,
        validator: &dyn crate::validator::ConfigValidator,
        plan: &crate::pipeline::CollectorPlan,
        config_hash: &str,
    ) -> crate::validator::Verdict {
        let cached = self
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(config_hash)
            .cloned();
        if let Some(verdict) = cached {
            return verdict;
        }
        let verdict = validator.validate(plan).await;
        if !matches!(verdict, crate::validator::Verdict::Unchecked(_)) {
            let mut verdicts = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
            if verdicts.len() > 1024 {
                verdicts.clear(); // a bound, not an LRU: verdicts are cheap to recompute
            }
            verdicts.insert(config_hash.to_owned(), verdict.clone());
        }
        verdict
    }

    /// Records that `key` now runs `hash`; true when that is news.
    pub fn note_rollout(&self, key: String, hash: &str) -> bool {
        let mut rolled_out = self
            .rolled_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rolled_out.insert(key, hash.to_owned()).as_deref() != Some(hash)
    }

    /// A managed Secret's key, from the watch cache.
    pub fn managed_secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let secret = self
            .managed_secrets
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))?;
        secret_value(&secret, key)
    }
}

/// Runs one reconcile, counting it, its duration and its failure kind.
pub async fn measured(
    ctx: &Context,
    controller: &'static str,
    reconcile: impl std::future::Future<Output = Result<kube::runtime::controller::Action>>,
) -> Result<kube::runtime::controller::Action> {
    let started = std::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics.reconciled(controller, started.elapsed());
    if let Err(error) = &result {
        ctx.metrics.failed(controller, error.metric_label());
    }
    result
}

/// The stores the controllers read from; filled by the watches in `crate::run`.
pub struct Stores {
    pub tenants: Store<TelemetryTenant>,
    pub collectors: Store<RegionalCollector>,
    pub managed_secrets: Store<Secret>,
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

/// Reads a key of a user's Secret.
pub enum SecretLookup {
    Found(String),
    SecretNotFound,
    KeyNotFound,
}

pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<SecretLookup> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(match api.get_opt(name).await? {
        None => SecretLookup::SecretNotFound,
        Some(secret) => match secret_value(&secret, key) {
            Some(value) => SecretLookup::Found(value),
            None => SecretLookup::KeyNotFound,
        },
    })
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
