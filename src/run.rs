//! Wires the watches and both controllers together and runs them until shutdown. Each kind is
//! watched once: one shared reflector per kind feeds its cache and every controller that
//! reacts to it. What requeues what is decided in `crate::controller::triggers`.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{RegionalCollector, TelemetryTenant};
use crate::controller::triggers;
use crate::controller::{self, ChildStores, Context, Settings, Stores};
use crate::resources::collector::SHARD_RECORD_COMPONENT;
use crate::resources::{LABEL_COMPONENT, LABEL_MANAGED_BY};
use crate::server::{Health, Readiness};

/// Which namespaces telemux serves.
#[derive(Debug, Clone, Default)]
pub enum Scope {
    /// Every namespace (the chart's default).
    #[default]
    Cluster,
    /// One namespace only.
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::Cluster => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// How many changes a shared watch buffers for a slow subscriber before it waits for it.
const SHARED_BUFFER: usize = 1024;

/// One watch of a kind: its cache, and every object it touches (applied or deleted) for the
/// controllers that react to it. kube's own shared reflector tells subscribers of applied
/// objects only, and a deletion (a tenant, a collector, a Secret) must requeue too.
struct SharedWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    touched: async_broadcast::Sender<Arc<K>>,
    /// Keeps the channel open while no subscriber is active.
    _idle: async_broadcast::InactiveReceiver<Arc<K>>,
    /// True once the cache holds its first full list. (`Store::wait_until_ready` wakes only
    /// one of several waiters: a reconcile waiting on it next to the readiness report once
    /// waited forever.)
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new() -> Self {
        let (writer, store) = {
            let writer = reflector::store::Writer::default();
            let store = writer.as_reader();
            (writer, store)
        };
        let (mut touched, idle) = async_broadcast::broadcast(SHARED_BUFFER);
        // Changes before a subscriber exists are buffered, not waited for; a full buffer
        // holds the watch back until subscribers catch up, so no change is ever lost.
        touched.set_await_active(false);
        SharedWatch {
            store,
            writer,
            touched,
            _idle: idle.deactivate(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }

    fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self._idle.activate_cloned()
    }

    /// Resolves to true once the cache holds its first full list.
    fn synced(&self) -> BoxFuture<'static, bool> {
        let mut synced = self.synced.subscribe();
        async move { synced.wait_for(|synced| *synced).await.is_ok() }.boxed()
    }

    /// Drives the watch into the cache and its subscribers until the stream ends.
    fn drive(
        self,
        events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    ) -> impl Future<Output = ()> + Send {
        let (touched, synced) = (self.touched, self.synced);
        reflector::reflector(self.writer, events.default_backoff())
            .inspect(move |event| {
                if let Ok(watcher::Event::InitDone) = event {
                    synced.send_replace(true); // the reflector has swapped in the full list
                }
            })
            .touched_objects()
            .for_each(move |object| {
                let touched = touched.clone();
                async move {
                    match object {
                        // Fails only once every receiver is gone, i.e. at shutdown.
                        Ok(object) => drop(touched.broadcast_direct(Arc::new(object)).await),
                        Err(error) => tracing::warn!(%error, "watch failed; retrying"),
                    }
                }
            })
    }
}

/// Every watch telemux runs, each kind once.
struct Watches {
    tenants: SharedWatch<TelemetryTenant>,
    collectors: SharedWatch<RegionalCollector>,
    /// Secrets telemux wrote (labelled managed-by=telemux), data included.
    managed_secrets: SharedWatch<Secret>,
    /// Secrets named by a spec (existing connection strings, storage, platform) are the
    /// users': their metadata is enough to notice a change, and their data is never cached.
    user_secrets: SharedWatch<PartialObjectMeta<Secret>>,
    /// Which tenants each shard serves (`resources::collector::shard_record`).
    shard_records: SharedWatch<ConfigMap>,
    /// True once every cache above holds its first full list.
    all_synced: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Watches {
    fn new() -> Self {
        Watches {
            tenants: SharedWatch::new(),
            collectors: SharedWatch::new(),
            managed_secrets: SharedWatch::new(),
            user_secrets: SharedWatch::new(),
            shard_records: SharedWatch::new(),
            all_synced: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    fn stores(&self, children: ChildStores) -> Stores {
        Stores {
            children,
            tenants: self.tenants.store.clone(),
            collectors: self.collectors.store.clone(),
            managed_secrets: self.managed_secrets.store.clone(),
            user_secrets: self.user_secrets.store.clone(),
            shard_records: self.shard_records.store.clone(),
            synced: self.all_synced.subscribe(),
        }
    }

    /// Turns `health` to serving once every cache has its first full list, then stays pending.
    fn report_synced(&self, health: Arc<Health>) -> impl Future<Output = ()> + use<> {
        let all_synced = self.all_synced.clone();
        let caches = [
            self.tenants.synced(),
            self.collectors.synced(),
            self.managed_secrets.synced(),
            self.user_secrets.synced(),
            self.shard_records.synced(),
        ];
        async move {
            if futures::future::join_all(caches)
                .await
                .into_iter()
                .all(|synced| synced)
            {
                all_synced.send_replace(true);
                health.set(Readiness::Serving);
                tracing::info!("watch caches synced");
            }
            futures::future::pending::<()>().await
        }
    }

    /// Drives every watch; resolves only if one ends.
    async fn drive(self, client: Client, scope: Scope) {
        let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}=telemux"));
        let all = watcher::Config::default();
        // Users' Secrets only: telemux's own thousands are in `managed_secrets`.
        let users = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}!=telemux"));
        let user_secrets = watcher(scope.api::<PartialObjectMeta<Secret>>(&client), users);
        let records = watcher::Config::default().labels(&format!(
            "{LABEL_MANAGED_BY}=telemux,{LABEL_COMPONENT}={SHARD_RECORD_COMPONENT}"
        ));
        futures::future::join5(
            self.tenants
                .drive(lean(watcher(scope.api(&client), all.clone()))),
            self.collectors
                .drive(lean(watcher(scope.api(&client), all))),
            self.managed_secrets
                .drive(lean(watcher(scope.api(&client), managed))),
            self.user_secrets.drive(lean(user_secrets)),
            self.shard_records
                .drive(lean(watcher(scope.api(&client), records))),
        )
        .await;
    }
}

/// The writers behind [`ChildStores`], handed to the collector controller's child watches.
struct ChildWriters {
    config_maps: reflector::store::Writer<PartialObjectMeta<ConfigMap>>,
    services: reflector::store::Writer<PartialObjectMeta<Service>>,
    budgets: reflector::store::Writer<PartialObjectMeta<PodDisruptionBudget>>,
}

fn child_stores() -> (ChildStores, ChildWriters) {
    let writers = ChildWriters {
        config_maps: reflector::store::Writer::default(),
        services: reflector::store::Writer::default(),
        budgets: reflector::store::Writer::default(),
    };
    let stores = ChildStores {
        config_maps: writers.config_maps.as_reader(),
        services: writers.services.as_reader(),
        budgets: writers.budgets.as_reader(),
    };
    (stores, writers)
}

/// A collector's children of one kind: their metadata (the owner reference, the
/// resourceVersion) is all the controller needs, and the shards' configurations are hundreds
/// of KiB each. With a `writer`, also kept in its store.
fn children<K>(
    client: &Client,
    scope: &Scope,
    config: &watcher::Config,
    writer: Option<reflector::store::Writer<PartialObjectMeta<K>>>,
) -> impl Stream<Item = watcher::Result<PartialObjectMeta<K>>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let events = lean(watcher(
        scope.api::<PartialObjectMeta<K>>(client),
        config.clone(),
    ));
    match writer {
        Some(writer) => reflector::reflector(writer, events)
            .touched_objects()
            .boxed(),
        None => events.touched_objects().boxed(),
    }
}

/// What no reconcile reads, dropped before it reaches a cache: managed fields (often as large
/// as the object) and kubectl's copy of the last applied object. At thousands of tenants and
/// twice as many Secrets they were a good part of the operator's memory.
fn lean<K: Resource + Send + 'static>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static {
    events.modify(|object| {
        object.managed_fields_mut().clear();
        object
            .annotations_mut()
            .remove("kubectl.kubernetes.io/last-applied-configuration");
    })
}

/// Runs both controllers until `shutdown` resolves. `health` turns
/// [`Readiness::Serving`] once every watch cache has its first full list.
pub async fn run(
    client: Client,
    scope: Scope,
    settings: Settings,
    metrics: Arc<crate::metrics::Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.shared();
    let watches = Watches::new();
    metrics.observe_stores(
        watches.tenants.store.clone(),
        watches.collectors.store.clone(),
    );
    let caches_synced = watches.report_synced(health.clone());
    let (children, writers) = child_stores();
    let collector = collector_controller(&client, &scope, &watches, writers);
    // Only while leading, like the controllers: one writer of the figures.
    let delivery = crate::delivery::collect::collect_delivery(
        client.clone(),
        scope.api(&client),
        watches.tenants.store.clone(),
        settings.delivery.clone(),
        metrics.clone(),
    );
    let ctx = Context::new(client.clone(), watches.stores(children), settings, metrics);
    let tenants = tenant_controller(&watches)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            controller::tenant::reconcile,
            controller::tenant::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "tenant reconcile request failed");
            }
        });
    let collectors = collector
        .graceful_shutdown_on(shutdown)
        .run(
            controller::collector::reconcile,
            controller::collector::error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "collector reconcile request failed");
            }
        });
    tracing::info!("telemux controllers started");
    tokio::select! {
        _ = futures::future::join(tenants, collectors) => {},
        _ = delivery => tracing::error!("the collection of delivery figures ended"),
        _ = watches.drive(client, scope) => tracing::error!("a watch ended"),
        _ = caches_synced => {},
    }
    health.set(Readiness::Stopping);
    tracing::info!("telemux controllers stopped");
}

/// Tenant reconciles at once. Each waits on a handful of API requests in turn, so a burst of
/// new tenants goes as fast as the API server answers only with many in flight; a tenant whose
/// Azure call is slow holds only its own slot.
const TENANT_CONCURRENCY: u16 = 32;

/// Tenants: their own changes, their Secrets, the user Secrets they name, and collectors.
fn tenant_controller(watches: &Watches) -> Controller<TelemetryTenant> {
    let tenants = &watches.tenants;
    let (by_collector, by_secret) = (tenants.store.clone(), tenants.store.clone());
    let verdicts = triggers::CollectorVerdicts::default();
    let collectors = watches.collectors.store.clone();
    let (records, record_entries) = (
        watches.shard_records.store.clone(),
        triggers::ShardRecordEntries::default(),
    );
    let changes = beyond_status(tenants.subscribe(), tenants.store.clone());
    Controller::for_shared_stream(changes, tenants.store.clone())
        .with_config(ControllerConfig::default().concurrency(TENANT_CONCURRENCY))
        .owns_shared_stream(watches.managed_secrets.subscribe())
        .watches_shared_stream(watches.collectors.subscribe(), move |collector| {
            // The cache drops a deleted collector before its last state reaches us.
            let exists = collectors.get(&ObjectRef::from_obj(&*collector)).is_some();
            verdicts.tenants_to_requeue(&by_collector.state(), &collector, exists)
        })
        .watches_shared_stream(watches.shard_records.subscribe(), move |record| {
            // The cache drops a deleted record before its last state reaches us.
            let exists = records.get(&ObjectRef::from_obj(&*record)).is_some();
            record_entries.tenants_to_requeue(&record, exists)
        })
        .watches_shared_stream(watches.user_secrets.subscribe(), move |secret| {
            let namespace = secret.namespace();
            triggers::tenants_of_user_secret(
                &by_secret.state(),
                namespace.as_deref(),
                &secret.name_any(),
            )
        })
}

/// The tenants whose spec, labels, annotations, finalizers or deletion changed, and any seen
/// for the first time. Their status is telemux's own: without this, every status write ran
/// the tenant's reconcile once more, which at thousands of tenants was most of the operator's
/// requests. (kube's `predicate_filter` works on watcher streams, not shared ones.) A deleted
/// tenant's last state looks unchanged and is dropped: there is nothing left to reconcile.
fn beyond_status(
    touched: impl Stream<Item = Arc<TelemetryTenant>> + Send + 'static,
    store: Store<TelemetryTenant>,
) -> impl Stream<Item = Arc<TelemetryTenant>> + Send + 'static {
    status_changes_dropped(touched, store, false)
}

/// [`beyond_status`], and deleted tenants: a collector reads its tenants' specs, labels and
/// Secrets, never their status, and must drop a deleted one. Without this, each tenant status
/// write (two per new tenant, then its delivery figures) requeued its collectors.
fn beyond_status_or_deleted(
    touched: impl Stream<Item = Arc<TelemetryTenant>> + Send + 'static,
    store: Store<TelemetryTenant>,
) -> impl Stream<Item = Arc<TelemetryTenant>> + Send + 'static {
    status_changes_dropped(touched, store, true)
}

fn status_changes_dropped(
    touched: impl Stream<Item = Arc<TelemetryTenant>> + Send + 'static,
    store: Store<TelemetryTenant>,
    pass_deleted: bool,
) -> impl Stream<Item = Arc<TelemetryTenant>> + Send + 'static {
    let mut seen: HashMap<ObjectRef<TelemetryTenant>, u64> = HashMap::new();
    let mut events = 0_u64;
    touched.filter(move |tenant| {
        let meta = &tenant.metadata;
        let fingerprint = hash_of(&(
            meta.generation,
            &meta.labels,
            &meta.annotations,
            &meta.finalizers,
            meta.deletion_timestamp.is_some(),
        ));
        let key = ObjectRef::from_obj(&**tenant);
        // The cache drops a deleted tenant before its last state reaches us.
        let deleted = pass_deleted && store.get(&key).is_none();
        let pass = seen.insert(key, fingerprint) != Some(fingerprint) || deleted;
        // Now and then, forget deleted tenants (the cache holds every live one).
        events += 1;
        if events.is_multiple_of(4096) && !store.is_empty() {
            seen.retain(|key, _| store.get(key).is_some());
        }
        futures::future::ready(pass)
    })
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Collectors: their own changes, their children, their tenants and all those Secrets.
fn collector_controller(
    client: &Client,
    scope: &Scope,
    watches: &Watches,
    writers: ChildWriters,
) -> Controller<RegionalCollector> {
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}=telemux"));
    // Debounced in the reconcile (`controller::context::Pacing`), not here: kube's debounce
    // waits for a quiet moment, which a burst of thousands of tenants never leaves.
    let config = ControllerConfig::default().concurrency(4);
    let collectors = &watches.collectors;
    let (c1, c2, c3) = (
        collectors.store.clone(),
        collectors.store.clone(),
        collectors.store.clone(),
    );
    let tenants = watches.tenants.store.clone();
    let tenants_seen = watches.tenants.store.clone();
    Controller::for_shared_stream(collectors.subscribe(), collectors.store.clone())
        .with_config(config)
        .owns_stream(children(client, scope, &managed, Some(writers.config_maps)))
        .owns_stream(children::<StatefulSet>(client, scope, &managed, None))
        .owns_stream(children(client, scope, &managed, Some(writers.services)))
        .owns_stream(children(client, scope, &managed, Some(writers.budgets)))
        .watches_shared_stream(watches.managed_secrets.subscribe(), move |secret| {
            let owner = triggers::owning_tenant(&secret).and_then(|t| tenants.get(&t));
            triggers::collectors_of_managed_secret(&c1.state(), owner.as_deref(), &secret)
        })
        .watches_shared_stream(
            beyond_status_or_deleted(watches.tenants.subscribe(), tenants_seen),
            move |tenant| triggers::collectors_of_tenant(&c2.state(), &tenant),
        )
        .watches_shared_stream(watches.user_secrets.subscribe(), move |secret| {
            let namespace = secret.namespace();
            triggers::collectors_of_user_secret(
                &c3.state(),
                namespace.as_deref(),
                &secret.name_any(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(generation: i64, status_reason: &str) -> TelemetryTenant {
        let mut tenant: TelemetryTenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
            "metadata": { "name": "acme", "namespace": "tenants", "generation": generation },
            "spec": { "tenantId": "acme", "regions": ["westeurope"],
                      "applicationInsights": { "existing": { "connectionStringSecretRef":
                          { "name": "ai", "key": "connection-string" } } } },
        }))
        .unwrap();
        tenant.status = Some(
            serde_json::from_value(serde_json::json!({
                "conditions": [{ "type": "Ready", "status": "False", "reason": status_reason,
                                 "message": "", "lastTransitionTime": "2026-12-02T10:00:00Z" }]
            }))
            .unwrap(),
        );
        tenant
    }

    #[tokio::test]
    async fn a_tenant_reconciles_on_a_change_beyond_its_status_only() {
        // The cache is still empty, as while its first list is loading: a tenant is passed all
        // the same (it once was taken for deleted).
        let store = reflector::store::Writer::<TelemetryTenant>::default().as_reader();
        let first = tenant(1, "Pending");
        let status_only = tenant(1, "Ready");
        let mut annotated = tenant(1, "Ready");
        annotated.metadata.annotations = Some([("poke".to_owned(), "1".to_owned())].into());
        let spec_changed = tenant(2, "Ready");
        let touched = [
            first,
            status_only,
            annotated.clone(),
            annotated,
            spec_changed,
        ]
        .into_iter()
        .map(Arc::new);
        let passed: Vec<_> = beyond_status(futures::stream::iter(touched), store)
            .collect()
            .await;
        let seen: Vec<_> = passed
            .iter()
            .map(|t| (t.metadata.generation, t.metadata.annotations.is_some()))
            .collect();
        assert_eq!(seen, [(Some(1), false), (Some(1), true), (Some(2), false)]);
    }

    #[tokio::test]
    async fn collectors_hear_of_a_tenant_beyond_its_status_and_of_its_deletion() {
        let mut writer = reflector::store::Writer::<TelemetryTenant>::default();
        let store = writer.as_reader();
        let live = tenant(1, "Pending");
        writer.apply_watcher_event(&watcher::Event::Apply(live.clone()));
        let status_only = tenant(1, "Ready");
        let mut gone = tenant(1, "Ready");
        gone.metadata.name = Some("gone".into());
        let touched = [live, status_only, gone.clone(), gone]
            .into_iter()
            .map(Arc::new);
        let passed: Vec<_> = beyond_status_or_deleted(futures::stream::iter(touched), store)
            .map(|t| t.name_any())
            .collect()
            .await;
        // "gone" is not in the cache: deleted, so each of its events passes.
        assert_eq!(passed, ["acme", "gone", "gone"]);
    }
}
