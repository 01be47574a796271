//! Shared by the integration tests: a client pinned to the local plane, a namespace per test,
//! an `eventually` poller, and the operator running in-process, scoped to the test namespace.

#![allow(dead_code)] // each test binary uses a different part

pub mod chart;
pub mod dataplane;
pub mod otlp;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use telemux::api::{RegionalCollector, TelemetryTenant};
use tokio::sync::oneshot;

pub const KUBECONFIG_ENV: &str = "TELEMUX_TEST_KUBECONFIG";

/// A client for the local plane named by [`KUBECONFIG_ENV`]. A test that calls it is marked
/// `#[cfg_attr(no_plane, ignore = ...)]` (see build.rs): it only runs when the variable is set,
/// or under CI, and then a missing plane is a failure, never a skip.
pub async fn plane_client() -> Client {
    let path = std::env::var(KUBECONFIG_ENV)
        .ok()
        .filter(|p| std::path::Path::new(p).exists());
    let Some(path) = path else {
        panic!(
            "{KUBECONFIG_ENV} does not name a kubeconfig file; start the plane with `make cluster-up`"
        );
    };
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the plane's kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let client = Client::try_from(config).expect("a client");
    if let Err(error) = client.apiserver_version().await {
        panic!("the local plane at {path} does not answer: {error}");
    }
    client
}

/// The path a component's variable names (a binary the Makefile builds). A test that calls it
/// is marked with the component's cfg (see build.rs): it only runs when the variable is set, or
/// under CI, and then a missing component is a failure.
pub fn required_binary(var: &str, make_target: &str) -> std::path::PathBuf {
    std::env::var_os(var)
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{var} does not name a binary; build it with `make {make_target}`")
        })
}

/// Polls `check` until it returns `Some`, with backoff, failing after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// The telemux resources that report conditions.
pub trait Conditioned:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    fn into_conditions(self) -> Vec<Condition>;
}

impl Conditioned for TelemetryTenant {
    fn into_conditions(self) -> Vec<Condition> {
        self.status.map(|s| s.conditions).unwrap_or_default()
    }
}

impl Conditioned for RegionalCollector {
    fn into_conditions(self) -> Vec<Condition> {
        self.status.map(|s| s.conditions).unwrap_or_default()
    }
}

/// The condition `type_` of the resource `name` as (status, reason, message), if it has one.
pub async fn condition<K: Conditioned>(
    api: &Api<K>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    api.get(name)
        .await
        .ok()?
        .into_conditions()
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Waits until the resource `name` has the condition `type_` with `status` (and `reason`, when
/// given); returns the condition's reason and message.
pub async fn wait_condition<K: Conditioned>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> (String, String) {
    let kind = K::kind(&());
    let what = match reason {
        Some(reason) => format!("{kind} {name} {type_}={status} ({reason})"),
        None => format!("{kind} {name} {type_}={status}"),
    };
    eventually(&what, timeout, || async {
        let (s, r, message) = condition(api, name, type_).await?;
        (s == status && reason.is_none_or(|reason| r == reason)).then_some((r, message))
    })
    .await
}

/// Names of the objects telemux makes for a collector or a tenant, from the operator's own
/// name functions (which take the resource; only its name matters).
pub mod names {
    use telemux::api::{RegionalCollector, TelemetryTenant};
    use telemux::resources::{collector, tenant};

    fn collector_named(name: &str) -> RegionalCollector {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }, "spec": { "region": "unused" }
        }))
        .expect("a RegionalCollector")
    }

    fn tenant_named(name: &str) -> TelemetryTenant {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": { "tenantId": name, "regions": [], "applicationInsights": { "existing": {
                "connectionStringSecretRef": { "name": "unused", "key": "unused" } } } }
        }))
        .expect("a TelemetryTenant")
    }

    /// The StatefulSet and Service of the collector's first shard (the only one of a
    /// collector with few tenants).
    pub fn workload(collector: &str) -> String {
        shard_workload(collector, 0)
    }

    pub fn config_map(collector: &str) -> String {
        collector::config_map_name(&collector_named(collector), 0)
    }

    pub fn collector_secret(collector: &str) -> String {
        collector::secret_name(&collector_named(collector), 0)
    }

    /// The StatefulSet and Service of the collector's shard `shard`.
    pub fn shard_workload(collector: &str, shard: u32) -> String {
        collector::workload_name(&collector_named(collector), shard)
    }

    pub fn shard_config_map(collector: &str, shard: u32) -> String {
        collector::config_map_name(&collector_named(collector), shard)
    }

    pub fn platform_credentials(collector: &str) -> String {
        collector::platform_credentials_secret_name(&collector_named(collector))
    }

    /// The queue claim of the collector pod `ordinal`, named by the StatefulSet controller
    /// after the claim template and the pod.
    pub fn queue_claim(collector: &str, ordinal: u32) -> String {
        format!(
            "{}-{}-{ordinal}",
            collector::QUEUE_VOLUME,
            workload(collector)
        )
    }

    pub fn tenant_credentials(tenant: &str) -> String {
        tenant::credentials_secret_name(&tenant_named(tenant))
    }

    pub fn tenant_connection_string(tenant: &str) -> String {
        tenant::connection_string_secret_name(&tenant_named(tenant))
    }
}

/// A namespace of its own for one test, labelled so leftovers can be found.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> Self {
        let suffix: String = (0..6).map(|_| char::from(b'a' + rand_u8() % 26)).collect();
        let name = format!("t-{}-{suffix}", test.replace('_', "-"));
        let name: String = name
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches('-')
            .to_owned();
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "telemux.io/test": "true" } }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        eventually(
            "the default ServiceAccount of the test namespace",
            Duration::from_secs(30),
            || {
                let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    Api::namespaced(client.clone(), &name);
                async move { api.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        TestNamespace {
            client: client.clone(),
            name,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates a Secret with one key, as a user would.
    pub async fn create_secret(&self, name: &str, key: &str, value: &str) {
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
            serde_json::json!({ "metadata": { "name": name }, "stringData": { key: value } }),
        )
        .unwrap();
        self.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("creating a Secret");
    }

    /// Creates a one-replica RegionalCollector for `region`.
    pub async fn create_collector(&self, name: &str, region: &str) {
        let collector: RegionalCollector = serde_json::from_value(serde_json::json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
            "metadata": { "name": name }, "spec": { "region": region, "replicas": 1 }
        }))
        .unwrap();
        self.api::<RegionalCollector>()
            .create(&PostParams::default(), &collector)
            .await
            .expect("creating a RegionalCollector");
    }

    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

fn rand_u8() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u8
}

/// Installs (server-side apply) the CRDs from crds/ and waits until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in telemux::api::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        let mut value = serde_json::to_value(&crd).unwrap();
        value["apiVersion"] = "apiextensions.k8s.io/v1".into();
        value["kind"] = "CustomResourceDefinition".into();
        api.patch(
            &name,
            &PatchParams::apply("telemux-tests").force(),
            &Patch::Apply(value),
        )
        .await
        .expect("applying a CRD");
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await;
    }
}

/// The operator running in this test's runtime, serving only the test namespace.
pub struct Operator {
    pub metrics: Arc<telemux::metrics::Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// Starts the operator acting as the chart's ServiceAccount (see [`chart`]): `client`
    /// (the tests' admin) installs that RBAC, the operator gets none of its rights.
    pub async fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, namespace, Self::test_settings()).await
    }

    /// What the tests run the operator with: short debounce, the built collector as validator.
    pub fn test_settings() -> telemux::controller::Settings {
        telemux::controller::Settings {
            collector_debounce: Duration::from_millis(500),
            collector_binary: collector_binary(),
            // Delivery figures within a second or two; Delivering turns False after 5 s.
            delivery: telemux::delivery::collect::DeliverySettings {
                interval: Duration::from_secs(1),
                grace: Duration::from_secs(5),
                per_tenant_metrics: true,
                read_timeout: Duration::from_secs(2),
            },
            ..Default::default()
        }
    }

    pub async fn start_with(
        client: &Client,
        namespace: &str,
        settings: telemux::controller::Settings,
    ) -> Self {
        chart::install_chart_rbac(client).await;
        let operator_client = chart::impersonating_client().await;
        let metrics = Arc::new(telemux::metrics::Metrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(telemux::run::run(
            operator_client,
            telemux::run::Scope::Namespace(namespace.to_owned()),
            settings,
            metrics.clone(),
            Arc::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Operator {
            metrics,
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// The collector binary the Makefile builds (`OTELCOL_BIN`), when present.
pub fn collector_binary() -> Option<std::path::PathBuf> {
    std::env::var_os("OTELCOL_BIN")
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
}

/// The collector binary (`OTELCOL_BIN`), for tests marked `no_collector`.
pub fn require_collector_binary() -> std::path::PathBuf {
    required_binary("OTELCOL_BIN", "collector")
}

/// Everything the operator logs in this test binary (all levels telemux uses, and its HTTP
/// stack at debug), so a test can check what never appears in logs.
pub fn captured_logs() -> String {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        logs
    });
    String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}
