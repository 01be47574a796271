//! Wires the watches and both controllers together and runs them until shutdown. Each kind is
//! watched once: one shared reflector per kind feeds its cache and every controller that
//! reacts to it. What requeues what is decided in `crate::controller::triggers`.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{RegionalCollector, TelemetryTenant};
use crate::controller::triggers;
use crate::controller::{self, Context, Settings, Stores};
use crate::resources::LABEL_MANAGED_BY;
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
        }
    }

    fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self._idle.activate_cloned()
    }

    /// Resolves to true once the cache holds its first full list.
    fn synced(&self) -> BoxFuture<'static, bool> {
        let store = self.store.clone();
        async move { store.wait_until_ready().await.is_ok() }.boxed()
    }

    /// Drives the watch into the cache and its subscribers until the stream ends.
    fn drive(
        self,
        events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    ) -> impl Future<Output = ()> + Send {
        let touched = self.touched;
        reflector::reflector(self.writer, events.default_backoff())
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
}

impl Watches {
    fn new() -> Self {
        Watches {
            tenants: SharedWatch::new(),
            collectors: SharedWatch::new(),
            managed_secrets: SharedWatch::new(),
            user_secrets: SharedWatch::new(),
        }
    }

    fn stores(&self) -> Stores {
        Stores {
            tenants: self.tenants.store.clone(),
            collectors: self.collectors.store.clone(),
            managed_secrets: self.managed_secrets.store.clone(),
        }
    }

    /// Turns `health` to serving once every cache has its first full list, then stays pending.
    fn report_synced(&self, health: Arc<Health>) -> impl Future<Output = ()> + use<> {
        let caches = [
            self.tenants.synced(),
            self.collectors.synced(),
            self.managed_secrets.synced(),
            self.user_secrets.synced(),
        ];
        async move {
            if futures::future::join_all(caches)
                .await
                .into_iter()
                .all(|synced| synced)
            {
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
        let user_secrets = watcher(scope.api::<PartialObjectMeta<Secret>>(&client), all.clone())
            .modify(|s| s.managed_fields_mut().clear());
        futures::future::join4(
            self.tenants.drive(watcher(scope.api(&client), all.clone())),
            self.collectors.drive(watcher(scope.api(&client), all)),
            self.managed_secrets
                .drive(watcher(scope.api(&client), managed)),
            self.user_secrets.drive(user_secrets),
        )
        .await;
    }
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
    let collector = collector_controller(&client, &scope, &watches);
    let ctx = Context::new(client.clone(), watches.stores(), settings, metrics);
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
        _ = watches.drive(client, scope) => tracing::error!("a watch ended"),
        _ = caches_synced => {},
    }
    health.set(Readiness::Stopping);
    tracing::info!("telemux controllers stopped");
}

/// Tenants: their own changes, their Secrets, the user Secrets they name, and collectors.
fn tenant_controller(watches: &Watches) -> Controller<TelemetryTenant> {
    let tenants = &watches.tenants;
    let (by_collector, by_secret) = (tenants.store.clone(), tenants.store.clone());
    let verdicts = triggers::CollectorVerdicts::default();
    let collectors = watches.collectors.store.clone();
    Controller::for_shared_stream(tenants.subscribe(), tenants.store.clone())
        .with_config(ControllerConfig::default().concurrency(8))
        .owns_shared_stream(watches.managed_secrets.subscribe())
        .watches_shared_stream(watches.collectors.subscribe(), move |collector| {
            // The cache drops a deleted collector before its last state reaches us.
            let exists = collectors.get(&ObjectRef::from_obj(&*collector)).is_some();
            verdicts.tenants_to_requeue(&by_collector.state(), &collector, exists)
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

/// Collectors: their own changes, their children, their tenants and all those Secrets.
fn collector_controller(
    client: &Client,
    scope: &Scope,
    watches: &Watches,
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
    Controller::for_shared_stream(collectors.subscribe(), collectors.store.clone())
        .with_config(config)
        .owns(scope.api::<ConfigMap>(client), managed.clone())
        .owns(scope.api::<StatefulSet>(client), managed.clone())
        .owns(scope.api::<Service>(client), managed)
        .watches_shared_stream(watches.managed_secrets.subscribe(), move |secret| {
            triggers::collectors_of_managed_secret(&c1.state(), &tenants.state(), &secret)
        })
        .watches_shared_stream(watches.tenants.subscribe(), move |tenant| {
            triggers::collectors_of_tenant(&c2.state(), &tenant)
        })
        .watches_shared_stream(watches.user_secrets.subscribe(), move |secret| {
            let namespace = secret.namespace();
            triggers::collectors_of_user_secret(
                &c3.state(),
                namespace.as_deref(),
                &secret.name_any(),
            )
        })
}
