//! Wires the watches, caches and both controllers together and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{RegionalCollector, TelemetryTenant};
use crate::controller::{self, Context, Settings, Stores};
use crate::resources::{LABEL_COLLECTOR, LABEL_MANAGED_BY, LABEL_TENANT};
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
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}=telemux"));
    let tenants_api: Api<TelemetryTenant> = scope.api(&client);
    let collectors_api: Api<RegionalCollector> = scope.api(&client);
    let secrets_api: Api<Secret> = scope.api(&client);

    // One cache of the Secrets telemux wrote, shared by both controllers.
    let (managed_secrets, secrets_writer) = reflector::store_shared::<Secret>(1024);
    let secret_events = secrets_writer
        .subscribe()
        .expect("a shared store can be subscribed to");
    let secrets_reflector = reflector::reflector(
        secrets_writer,
        watcher(secrets_api.clone(), managed.clone()),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|_| futures::future::ready(()));

    let tenant_controller = Controller::new(tenants_api.clone(), watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(8));
    let collector_controller = Controller::new(collectors_api, watcher::Config::default())
        .with_config(
            ControllerConfig::default()
                .debounce(settings.collector_debounce)
                .concurrency(4),
        );
    let tenants = tenant_controller.store();
    let collectors = collector_controller.store();
    metrics.observe_stores(tenants.clone(), collectors.clone());
    let caches_synced = {
        let (tenants, collectors, secrets) =
            (tenants.clone(), collectors.clone(), managed_secrets.clone());
        let health = health.clone();
        async move {
            let synced = futures::future::join3(
                tenants.wait_until_ready(),
                collectors.wait_until_ready(),
                secrets.wait_until_ready(),
            )
            .await;
            if let (Ok(()), Ok(()), Ok(())) = synced {
                health.set(Readiness::Serving);
                tracing::info!("watch caches synced");
            }
            // Nothing more to do; stay pending so the select below ignores this arm.
            futures::future::pending::<()>().await
        }
    };
    let ctx = Context::new(
        client.clone(),
        Stores {
            tenants: tenants.clone(),
            collectors: collectors.clone(),
            managed_secrets,
        },
        settings,
        metrics,
    );

    // Secrets named by a spec (existing connection strings, storage, platform) are the users':
    // a metadata-only watch of all Secrets notices their changes without caching their data.
    let user_secret_events = |client: Client| {
        watcher(
            scope.api::<PartialObjectMeta<Secret>>(&client),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects()
    };

    let tenant_store = tenants.clone();
    let collector_store = collectors.clone();
    let tenant_controller = tenant_controller
        .owns_shared_stream(secret_events.clone())
        .watches(
            scope.api::<RegionalCollector>(&client),
            watcher::Config::default(),
            {
                let tenants = tenant_store.clone();
                move |collector| tenants_of_collector(&tenants.state(), &collector)
            },
        )
        .watches_stream(user_secret_events(client.clone()), {
            let tenants = tenant_store.clone();
            move |secret| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                tenants
                    .state()
                    .into_iter()
                    .filter(|t| t.namespace() == ns)
                    .filter(|t| {
                        t.spec
                            .application_insights
                            .existing
                            .as_ref()
                            .is_some_and(|e| e.connection_string_secret_ref.name == name)
                    })
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            }
        })
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

    let collector_controller = collector_controller
        .owns(scope.api::<ConfigMap>(&client), managed.clone())
        .owns(scope.api::<StatefulSet>(&client), managed.clone())
        .owns(scope.api::<Service>(&client), managed.clone())
        .watches_shared_stream(secret_events, {
            let collectors = collector_store.clone();
            let tenants = tenant_store.clone();
            move |secret| {
                collectors_of_managed_secret(&collectors.state(), &tenants.state(), &secret)
            }
        })
        .watches(tenants_api, watcher::Config::default(), {
            let collectors = collector_store.clone();
            move |tenant| collectors_of_tenant(&collectors.state(), &tenant)
        })
        .watches_stream(user_secret_events(client.clone()), {
            let collectors = collector_store.clone();
            move |secret| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                collectors
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == ns && referenced_secrets(c).any(|s| s == name))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            }
        })
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
        _ = futures::future::join(tenant_controller, collector_controller) => {},
        _ = secrets_reflector => tracing::error!("the Secret watch ended"),
        _ = caches_synced => {},
    }
    health.set(Readiness::Stopping);
    tracing::info!("telemux controllers stopped");
}

/// User Secrets a collector's spec names.
fn referenced_secrets(collector: &RegionalCollector) -> impl Iterator<Item = &str> {
    let spec = &collector.spec;
    let blob = spec
        .regional_storage
        .as_ref()
        .map(|s| s.azure_blob.connection_string_secret_ref.name.as_str());
    let platform = spec
        .platform
        .as_ref()
        .and_then(|p| p.application_insights.as_ref())
        .map(|ai| ai.connection_string_secret_ref.name.as_str());
    blob.into_iter().chain(platform)
}

/// Does this collector consider this tenant (serve it, or accept and drop it)?
pub fn collector_considers(collector: &RegionalCollector, tenant: &TelemetryTenant) -> bool {
    if collector.namespace() != tenant.namespace() {
        return false;
    }
    let selected = match &collector.spec.tenant_selector {
        Some(selector) => kube::core::Selector::try_from(selector.clone())
            .is_ok_and(|s| kube::core::SelectorExt::matches(&s, tenant.labels())),
        None => tenant.spec.regions.contains(&collector.spec.region),
    };
    // A tenant the collector currently lists must be re-rendered away when it leaves.
    let listed = collector.status.as_ref().is_some_and(|s| {
        let id = &tenant.spec.tenant_id;
        s.routed_tenants.contains(id)
            || s.excluded_tenants.iter().any(|e| &e.tenant_id == id)
            || s.rejected_tenants
                .iter()
                .any(|r| r.name == tenant.name_any())
    });
    selected || listed
}

/// A tenant change requeues only the collectors that consider it.
fn collectors_of_tenant(
    collectors: &[Arc<RegionalCollector>],
    tenant: &TelemetryTenant,
) -> Vec<ObjectRef<RegionalCollector>> {
    collectors
        .iter()
        .filter(|c| collector_considers(c, tenant))
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// A collector's status change may change a tenant's Routed condition.
fn tenants_of_collector(
    tenants: &[Arc<TelemetryTenant>],
    collector: &RegionalCollector,
) -> Vec<ObjectRef<TelemetryTenant>> {
    tenants
        .iter()
        .filter(|t| collector_considers(collector, t))
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}

fn collectors_of_managed_secret(
    collectors: &[Arc<RegionalCollector>],
    tenants: &[Arc<TelemetryTenant>],
    secret: &Secret,
) -> Vec<ObjectRef<RegionalCollector>> {
    let labels = secret.labels();
    if let Some(name) = labels.get(LABEL_COLLECTOR) {
        return vec![ObjectRef::new(name).within(&secret.namespace().unwrap_or_default())];
    }
    let Some(tenant_id) = labels.get(LABEL_TENANT) else {
        return Vec::new();
    };
    tenants
        .iter()
        .filter(|t| t.namespace() == secret.namespace() && &t.spec.tenant_id == tenant_id)
        .flat_map(|t| collectors_of_tenant(collectors, t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(
        name: &str,
        region: &str,
        selector: Option<serde_json::Value>,
    ) -> Arc<RegionalCollector> {
        let mut spec = serde_json::json!({ "region": region });
        if let Some(selector) = selector {
            spec["tenantSelector"] = selector;
        }
        let mut c = RegionalCollector::new(name, serde_json::from_value(spec).unwrap());
        c.metadata.namespace = Some("ns".into());
        Arc::new(c)
    }

    fn tenant(id: &str, regions: &[&str]) -> TelemetryTenant {
        let spec = serde_json::json!({
            "tenantId": id, "regions": regions,
            "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
        });
        let mut t = TelemetryTenant::new(id, serde_json::from_value(spec).unwrap());
        t.metadata.namespace = Some("ns".into());
        t
    }

    fn names(refs: Vec<ObjectRef<RegionalCollector>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_tenant_change_requeues_only_the_collectors_of_its_regions() {
        let collectors = vec![
            collector("eu", "westeurope", None),
            collector("us", "eastus", None),
            collector(
                "eu-premium",
                "westeurope",
                Some(serde_json::json!({ "matchLabels": { "tier": "premium" } })),
            ),
        ];
        assert_eq!(
            names(collectors_of_tenant(
                &collectors,
                &tenant("acme", &["westeurope"])
            )),
            ["eu"]
        );
        assert_eq!(
            names(collectors_of_tenant(
                &collectors,
                &tenant("acme", &["eastus", "westeurope"])
            )),
            ["eu", "us"]
        );
        let mut premium = tenant("acme", &["northeurope"]);
        premium.metadata.labels = Some([("tier".to_owned(), "premium".to_owned())].into());
        assert_eq!(
            names(collectors_of_tenant(&collectors, &premium)),
            ["eu-premium"]
        );
    }

    #[test]
    fn a_tenant_leaving_a_region_still_requeues_the_collector_that_lists_it() {
        let mut eu = (*collector("eu", "westeurope", None)).clone();
        eu.status = Some(crate::api::RegionalCollectorStatus {
            routed_tenants: vec!["acme".into()],
            ..Default::default()
        });
        let collectors = vec![Arc::new(eu), collector("us", "eastus", None)];
        assert_eq!(
            names(collectors_of_tenant(
                &collectors,
                &tenant("acme", &["eastus"])
            )),
            ["eu", "us"]
        );
    }

    #[test]
    fn other_namespaces_are_never_requeued() {
        let mut other = (*collector("eu", "westeurope", None)).clone();
        other.metadata.namespace = Some("elsewhere".into());
        assert!(
            collectors_of_tenant(&[Arc::new(other)], &tenant("acme", &["westeurope"])).is_empty()
        );
    }
}
