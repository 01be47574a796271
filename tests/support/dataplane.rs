//! The data plane harness: the operator on the local plane, the real collector running what it
//! wrote, the ingestion emulator standing in for each tenant's App Insights, Azurite for the
//! regional copy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use serde_json::{Value, json};
use telemux::api::{RegionalCollector, TelemetryTenant};
use telemux_testkit::azurite::{Azurite, BlobClient};
use telemux_testkit::collector::LocalCollector;
use telemux_testkit::ingestion::{Envelope, IngestionEmulator};

use super::otlp::{Batch, Credential};
use super::{
    Operator, TestNamespace, eventually, install_crds, names, plane_client, required_binary,
};

pub const WAIT: Duration = Duration::from_secs(120);
pub const REGION: &str = "westeurope";
pub const COLLECTOR: &str = "westeurope";
pub const CONTAINERS: [&str; 3] = ["traces", "logs", "metrics"];

/// Instrumentation keys are GUIDs; the emulator refuses anything else, like the service.
pub fn ikey(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A marker that no other marker contains (`m-t1-m` is not inside `m-t11-m`).
pub fn marker(what: &str) -> String {
    format!("m-{what}-m")
}

pub struct Harness {
    pub ns: TestNamespace,
    pub operator: Operator,
    pub ingestion: IngestionEmulator,
    pub azurite: Option<Azurite>,
    pub otelcol: PathBuf,
    pub http: reqwest::Client,
}

pub struct TenantDef<'a> {
    pub name: &'a str,
    pub n: usize,
    pub regions: &'a [&'a str],
    pub extra: Value,
}

impl Harness {
    /// Needs the plane and the collector, and Azurite `with_blob`: a test that starts one is
    /// marked with their cfgs (see build.rs).
    pub async fn start(test: &str, with_blob: bool) -> Harness {
        let otelcol = super::require_collector_binary();
        let azurite_bin = with_blob.then(|| required_binary("AZURITE_BIN", "azurite"));
        let client = plane_client().await;
        install_crds(&client).await;
        let ns = TestNamespace::create(&client, test).await;
        let operator = Operator::start(&client, &ns.name).await;
        let ingestion = IngestionEmulator::start()
            .await
            .expect("starting the ingestion emulator");
        let azurite = match azurite_bin {
            Some(bin) => {
                let azurite = Azurite::start(&bin).await.expect("starting Azurite");
                for container in CONTAINERS {
                    azurite
                        .client()
                        .create_container(container)
                        .await
                        .expect("creating a container");
                }
                Some(azurite)
            }
            None => None,
        };
        Harness {
            ns,
            operator,
            ingestion,
            azurite,
            otelcol,
            http: reqwest::Client::new(),
        }
    }

    pub async fn teardown(self) {
        self.operator.stop().await;
        self.ns.delete().await;
    }

    pub async fn secret(&self, name: &str, key: &str, value: &str) {
        self.ns.create_secret(name, key, value).await;
    }

    pub async fn collector(&self, spec: Value) {
        let collector: RegionalCollector = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
            "metadata": { "name": COLLECTOR }, "spec": spec
        }))
        .unwrap();
        self.ns
            .api::<RegionalCollector>()
            .create(&PostParams::default(), &collector)
            .await
            .unwrap();
    }

    /// A tenant whose App Insights is the emulator, under its own instrumentation key.
    pub async fn tenant(&self, def: &TenantDef<'_>) {
        let source = format!("{}-ai-source", def.name);
        self.secret(
            &source,
            "connection-string",
            &self.ingestion.connection_string(&ikey(def.n)),
        )
        .await;
        let mut spec = json!({
            "tenantId": def.name,
            "regions": def.regions,
            "applicationInsights": { "existing": { "connectionStringSecretRef": {
                "name": source, "key": "connection-string"
            }}}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), def.extra.as_object()) {
            spec.extend(extra.clone());
        }
        let tenant: TelemetryTenant = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
            "metadata": { "name": def.name, "labels": { "pool": "e2e" } },
            "spec": spec
        }))
        .unwrap();
        self.ns
            .api::<TelemetryTenant>()
            .create(&PostParams::default(), &tenant)
            .await
            .unwrap();
    }

    /// Waits until the collector routes exactly `routed` and excludes exactly `excluded`, with
    /// a configuration the real collector validated.
    pub async fn wait_rendered(&self, routed: &[&str], excluded: &[&str]) {
        let mut routed: Vec<String> = routed.iter().map(|s| s.to_string()).collect();
        let mut excluded: Vec<String> = excluded.iter().map(|s| s.to_string()).collect();
        routed.sort();
        excluded.sort();
        let api = self.ns.api::<RegionalCollector>();
        eventually("the collector to render every tenant", WAIT, || async {
            let status = api.get(COLLECTOR).await.ok()?.status?;
            let mut now_excluded: Vec<String> = status
                .excluded_tenants
                .iter()
                .map(|e| e.tenant_id.clone())
                .collect();
            now_excluded.sort();
            let validated = status
                .conditions
                .iter()
                .any(|c| c.type_ == "ConfigValid" && c.reason == "Validated");
            (status.routed_tenants == routed && now_excluded == excluded && validated).then_some(())
        })
        .await;
    }

    /// The collector config and Secret files the operator wrote.
    pub async fn rendered(&self) -> (String, BTreeMap<String, Vec<u8>>) {
        let config = self
            .ns
            .api::<ConfigMap>()
            .get(&names::config_map(COLLECTOR))
            .await
            .unwrap()
            .data
            .unwrap()
            .remove(telemux::layout::CONFIG_FILE)
            .unwrap();
        let files: BTreeMap<String, Vec<u8>> = self
            .ns
            .api::<Secret>()
            .get(&names::collector_secret(COLLECTOR))
            .await
            .unwrap()
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        (config, files)
    }

    /// Runs the real collector with the ConfigMap and Secret the operator wrote.
    pub async fn run_collector(&self) -> LocalCollector {
        let (config, files) = self.rendered().await;
        LocalCollector::start(&self.otelcol, &config, &files).await
    }

    /// The collector workload's pod template annotations: a change of them is a rollout.
    pub async fn pod_template_annotations(&self) -> BTreeMap<String, String> {
        self.ns
            .api::<StatefulSet>()
            .get(&names::workload(COLLECTOR))
            .await
            .ok()
            .and_then(|d| d.spec?.template.metadata?.annotations)
            .unwrap_or_default()
    }

    pub async fn credential(&self, secret: &str) -> Credential {
        let data = self
            .ns
            .api::<Secret>()
            .get(secret)
            .await
            .unwrap()
            .data
            .unwrap();
        let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
        Credential {
            username: text("username"),
            password: text("password"),
        }
    }

    pub async fn tenant_credential(&self, tenant: &str) -> Credential {
        self.credential(&names::tenant_credentials(tenant)).await
    }

    /// Every envelope delivered to `tenant`'s instrumentation key, as JSON text.
    pub fn delivered(&self, n: usize) -> Vec<String> {
        self.ingestion
            .envelopes_for(&ikey(n))
            .iter()
            .map(|e: &Envelope| e.raw.to_string())
            .collect()
    }

    /// Waits until `n`'s ingestion has received every text in `needles` (each in some envelope).
    pub async fn wait_delivered(&self, n: usize, needles: &[&str]) {
        eventually(
            &format!("{needles:?} delivered to instrumentation key {}", ikey(n)),
            WAIT,
            || async {
                let delivered = self.delivered(n);
                needles
                    .iter()
                    .all(|needle| delivered.iter().any(|e| e.contains(needle)))
                    .then_some(())
            },
        )
        .await;
    }

    /// All blobs of the regional copy, as text.
    pub async fn blobs(&self) -> String {
        let Some(azurite) = &self.azurite else {
            return String::new();
        };
        let client: BlobClient = azurite.client();
        let mut text = String::new();
        for container in CONTAINERS {
            for name in client.list_blobs(container).await.unwrap() {
                let blob = client.get_blob(container, &name).await.unwrap();
                text.push_str(&String::from_utf8_lossy(&blob));
                text.push('\n');
            }
        }
        text
    }
}

pub fn batch(resource: &[(&str, &str)], attributes: &[(&str, &str)], body: &str) -> Batch {
    let owned = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Batch {
        resource: owned(resource),
        attributes: owned(attributes),
        event_attributes: owned(attributes),
        log_body: body.to_owned(),
        name: "e2e-operation".to_owned(),
    }
}
