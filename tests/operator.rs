//! The operator against the local control plane: tenants and a collector are applied, and what
//! a user relies on is checked on the objects the API server holds.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, PersistentVolumeClaim, Secret, Service,
};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, install_crds, names, plane_client};
use telemux::api::{RegionalCollector, TelemetryTenant};

const WAIT: Duration = Duration::from_secs(90);

struct Env {
    ns: TestNamespace,
    operator: Operator,
}

async fn setup(test: &str) -> Env {
    let client = plane_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, test).await;
    let operator = Operator::start(&client, &ns.name).await;
    Env { ns, operator }
}

impl Env {
    async fn teardown(self) {
        self.operator.stop().await;
        self.ns.delete().await;
    }

    fn ikey(n: u32) -> String {
        format!("00000000-0000-4000-8000-{n:012}")
    }

    fn connection_string(n: u32) -> String {
        format!(
            "InstrumentationKey={};IngestionEndpoint=https://westeurope-{n}.in.applicationinsights.azure.com/",
            Self::ikey(n)
        )
    }

    async fn secret(&self, name: &str, key: &str, value: &str) {
        self.ns.create_secret(name, key, value).await;
    }

    /// A tenant with an existing App Insights whose connection string Secret is created too.
    async fn tenant(&self, name: &str, n: u32, regions: &[&str], extra: Value) -> TelemetryTenant {
        self.secret(
            &format!("{name}-ai-source"),
            "connection-string",
            &Self::connection_string(n),
        )
        .await;
        self.tenant_without_secret(name, regions, extra).await
    }

    async fn tenant_without_secret(
        &self,
        name: &str,
        regions: &[&str],
        extra: Value,
    ) -> TelemetryTenant {
        let mut spec = json!({
            "tenantId": name,
            "regions": regions,
            "applicationInsights": { "existing": { "connectionStringSecretRef": {
                "name": format!("{name}-ai-source"), "key": "connection-string"
            }}}
        });
        merge(&mut spec, extra);
        let tenant: TelemetryTenant =
            serde_json::from_value(json!({ "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant", "metadata": { "name": name }, "spec": spec })).unwrap();
        self.ns
            .api::<TelemetryTenant>()
            .create(&PostParams::default(), &tenant)
            .await
            .unwrap()
    }

    async fn collector(&self, name: &str, region: &str) -> RegionalCollector {
        let collector: RegionalCollector = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
            "metadata": { "name": name },
            "spec": { "region": region, "replicas": 1 }
        }))
        .unwrap();
        self.ns
            .api::<RegionalCollector>()
            .create(&PostParams::default(), &collector)
            .await
            .unwrap()
    }

    async fn condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
    ) -> Option<(String, String, String)> {
        match kind {
            "tenant" => support::condition(&self.ns.api::<TelemetryTenant>(), name, type_).await,
            _ => support::condition(&self.ns.api::<RegionalCollector>(), name, type_).await,
        }
    }

    async fn wait_condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
    ) -> (String, String) {
        self.wait(kind, name, type_, status, None).await
    }

    /// Waits for a condition with this status and reason; returns its message.
    async fn wait_reason(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> String {
        self.wait(kind, name, type_, status, Some(reason)).await.1
    }

    async fn wait(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> (String, String) {
        match kind {
            "tenant" => {
                let api = self.ns.api::<TelemetryTenant>();
                support::wait_condition(&api, name, type_, status, reason, WAIT).await
            }
            _ => {
                let api = self.ns.api::<RegionalCollector>();
                support::wait_condition(&api, name, type_, status, reason, WAIT).await
            }
        }
    }

    /// Tenant ids the collector's rendered config routes (traces routing table).
    async fn routed_in_config(&self, collector: &str) -> Option<BTreeSet<String>> {
        let cm = self
            .ns
            .api::<ConfigMap>()
            .get_opt(&names::config_map(collector))
            .await
            .ok()??;
        let yaml = cm.data?.remove("config.yaml")?;
        let config: Value = serde_saphyr::from_str(&yaml).ok()?;
        let table = config["connectors"]["routing/traces"]["table"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Some(
            table
                .iter()
                .filter_map(|e| e["condition"].as_str())
                .filter_map(|c| {
                    c.strip_prefix(r#"resource.attributes["tenant.id"] == ""#)?
                        .strip_suffix('"')
                        .map(str::to_owned)
                })
                .collect(),
        )
    }

    async fn wait_routed(&self, collector: &str, expected: &[&str]) {
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        eventually(
            &format!("collector {collector} to route exactly {expected:?}"),
            WAIT,
            || async { (self.routed_in_config(collector).await? == expected).then_some(()) },
        )
        .await;
    }

    async fn workload(&self, collector: &str) -> Option<StatefulSet> {
        self.ns
            .api::<StatefulSet>()
            .get_opt(&names::workload(collector))
            .await
            .ok()?
    }

    /// Waits until the collector is Ready, its StatefulSet Available and nothing is moving.
    async fn wait_settled(&self, collector: &str) {
        self.wait_condition("collector", collector, "Ready", "True")
            .await;
        self.wait_quiet(collector).await;
    }

    /// Waits until nothing the collector's reconciles write changes any more: two readings
    /// 1.5 s apart are identical.
    async fn wait_quiet(&self, collector: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = self.resource_versions(collector).await;
        loop {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let now = self.resource_versions(collector).await;
            if now == last {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "collector {collector} never settled"
            );
            last = now;
        }
    }

    async fn resource_versions(&self, collector: &str) -> String {
        format!("{:?}", self.resource_version_map(collector).await)
    }

    /// The resourceVersion of every object telemux writes or reads, and the collector's status.
    async fn resource_version_map(&self, collector: &str) -> BTreeMap<String, Option<String>> {
        let mut versions = BTreeMap::new();
        self.versions_of::<ConfigMap>("cm", &mut versions).await;
        self.versions_of::<Secret>("secret", &mut versions).await;
        self.versions_of::<StatefulSet>("sts", &mut versions).await;
        self.versions_of::<Service>("svc", &mut versions).await;
        self.versions_of::<TelemetryTenant>("tenant", &mut versions)
            .await;
        let c = self
            .ns
            .api::<RegionalCollector>()
            .get(collector)
            .await
            .unwrap();
        versions.insert(
            "collector-status".into(),
            Some(serde_json::to_string(&c.status).unwrap()),
        );
        versions
    }
}

impl Env {
    async fn versions_of<K>(&self, prefix: &str, into: &mut BTreeMap<String, Option<String>>)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        for object in self
            .ns
            .api::<K>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            into.insert(
                format!("{prefix}/{}", object.name_any()),
                object.resource_version(),
            );
        }
    }
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
}

fn secret_strings(secret: &Secret) -> Vec<String> {
    let mut out: Vec<String> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(_, v)| String::from_utf8(v.0.clone()).ok())
        .collect();
    out.extend(secret.string_data.iter().flatten().map(|(_, v)| v.clone()));
    out
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_collector_routes_exactly_its_tenants_and_keeps_secrets_out_of_sight() {
    let env = setup("routes-three").await;
    env.collector("westeurope", "westeurope").await;
    for (n, name) in ["acme", "globex", "initech"].iter().enumerate() {
        env.tenant(
            name,
            n as u32 + 1,
            &["westeurope", "northeurope"],
            json!({}),
        )
        .await;
    }
    env.tenant("elsewhere", 9, &["eastus"], json!({})).await;

    env.wait_routed("westeurope", &["acme", "globex", "initech"])
        .await;
    for name in ["acme", "globex", "initech"] {
        let (reason, message) = env.wait_condition("tenant", name, "Ready", "True").await;
        assert_eq!(reason, "Ready");
        assert!(!message.is_empty());
        let status = env
            .ns
            .api::<TelemetryTenant>()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(status.collectors, vec!["westeurope".to_owned()]);
        assert_eq!(
            status.credentials_secret.as_deref(),
            Some(&*format!("{name}-ingestion-credentials"))
        );
    }
    let (reason, _) = env
        .wait_condition("tenant", "elsewhere", "Routed", "False")
        .await;
    assert_eq!(reason, "NoCollectorInRegion");

    // The StatefulSet becomes Available on the plane's nodes, and the collector says so.
    env.wait_condition("collector", "westeurope", "Available", "True")
        .await;
    env.wait_settled("westeurope").await;
    let collector = env
        .ns
        .api::<RegionalCollector>()
        .get("westeurope")
        .await
        .unwrap();
    let status = collector.status.unwrap();
    assert_eq!(status.tenant_count, 3);
    assert_eq!(status.routed_tenants, vec!["acme", "globex", "initech"]);
    assert_eq!(status.ready_replicas, 1);
    let workload = env.workload("westeurope").await.unwrap();
    let spec = workload.spec.unwrap();
    let annotations = spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(
        annotations.get("telemux.io/config-hash"),
        status.config_hash.as_ref()
    );
    // The pods run telemux's collector image (the one carrying its exporter), and each keeps
    // its queues on a claim of its own, bound on the plane.
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(telemux::api::collector::DEFAULT_COLLECTOR_IMAGE)
    );
    assert!(
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "queue" && m.mount_path == telemux::layout::QUEUE_DIR),
        "the queue volume is mounted where the config keeps the queues"
    );
    let claim = env
        .ns
        .api::<PersistentVolumeClaim>()
        .get(&names::queue_claim("westeurope", 0))
        .await
        .unwrap();
    assert_eq!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    for owned in [
        env.ns
            .api::<ConfigMap>()
            .get(&names::config_map("westeurope"))
            .await
            .unwrap()
            .metadata,
        env.ns
            .api::<Secret>()
            .get(&names::collector_secret("westeurope"))
            .await
            .unwrap()
            .metadata,
        env.ns
            .api::<Service>()
            .get(&names::workload("westeurope"))
            .await
            .unwrap()
            .metadata,
    ] {
        let owner = &owned.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("RegionalCollector", "westeurope")
        );
    }

    // The collector's Secret has an htpasswd of bcrypt hashes only.
    let collector_secret = env
        .ns
        .api::<Secret>()
        .get(&names::collector_secret("westeurope"))
        .await
        .unwrap();
    let htpasswd = String::from_utf8(
        collector_secret.data.as_ref().unwrap()["htpasswd"]
            .0
            .clone(),
    )
    .unwrap();
    let users: Vec<&str> = htpasswd
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(users, ["acme", "globex", "initech"]);
    assert!(
        htpasswd
            .lines()
            .all(|l| l.split_once(':').unwrap().1.starts_with("$2y$"))
    );

    // No secret material in any ConfigMap, status or event.
    let mut secrets = Vec::new();
    for secret in env
        .ns
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        if secret.name_any().ends_with("-ingestion-credentials")
            || secret.name_any().ends_with("-ai-source")
        {
            // Where to send is no secret: the status publishes the same endpoints.
            let mut secret = secret;
            if let Some(data) = secret.data.as_mut() {
                data.retain(|key, _| !key.starts_with("endpoint."));
            }
            secrets.extend(secret_strings(&secret).into_iter().filter(|s| s.len() > 16));
        }
    }
    for n in 1..=3 {
        secrets.push(Env::ikey(n));
    }
    let mut visible = String::new();
    for cm in env
        .ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        visible.push_str(&serde_json::to_string(&cm.data).unwrap());
    }
    for t in env
        .ns
        .api::<TelemetryTenant>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        visible.push_str(&serde_json::to_string(&t.status).unwrap());
    }
    visible.push_str(
        &serde_json::to_string(
            &env.ns
                .api::<RegionalCollector>()
                .get("westeurope")
                .await
                .unwrap()
                .status,
        )
        .unwrap(),
    );
    let events = env
        .ns
        .api::<CoreEvent>()
        .list(&ListParams::default())
        .await
        .unwrap();
    // The controller-manager publishes events here too: count only telemux's own.
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reporting_component.as_deref() == Some("telemux")),
        "telemux publishes events"
    );
    for event in events {
        visible.push_str(&format!("{:?} {:?}", event.reason, event.message));
    }
    for secret in &secrets {
        assert!(
            !visible.contains(secret.as_str()),
            "secret material is visible outside Secrets"
        );
    }
    env.teardown().await;
}

/// A credentials Secret restored from a backup before its tenant (no telemux label, so not in
/// the operator's cache): the operator's create is refused, it reads what is there, and the
/// clients' password stays.
#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_credentials_secret_restored_before_its_tenant_keeps_its_password() {
    use k8s_openapi::ByteString;
    let env = setup("restored-credentials").await;
    env.collector("eu", "westeurope").await;
    let issued = telemux::credentials::issue_credential().unwrap();
    let restored: Secret = serde_json::from_value(json!({
        "metadata": { "name": "acme-ingestion-credentials" },
        "data": {
            "username": ByteString(b"acme".to_vec()),
            "password": ByteString(issued.password.clone().into_bytes()),
            "bcrypt": ByteString(issued.bcrypt_hash.clone().into_bytes()),
        }
    }))
    .unwrap();
    env.ns
        .api::<Secret>()
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    env.tenant("acme", 1, &["westeurope"], json!({})).await;
    env.wait_condition("tenant", "acme", "Ready", "True").await;

    let secret = env
        .ns
        .api::<Secret>()
        .get("acme-ingestion-credentials")
        .await
        .unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(
        data["password"].0,
        issued.password.as_bytes(),
        "the restored password was replaced"
    );
    assert!(
        data.contains_key("endpoint.westeurope.grpc"),
        "{:?}",
        data.keys()
    );
    assert_eq!(
        secret
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("telemux"),
        "telemux manages the Secret from now on"
    );
    let events = env
        .ns
        .api::<CoreEvent>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let issued_events: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("CredentialIssued"))
        .filter(|e| e.involved_object.name.as_deref() == Some("acme"))
        .collect();
    assert!(issued_events.is_empty(), "{issued_events:?}");
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn changing_a_tenants_redaction_rolls_the_collector_once() {
    let env = setup("redaction-rollout").await;
    env.collector("westeurope", "westeurope").await;
    env.tenant("acme", 1, &["westeurope"], json!({})).await;
    env.tenant("globex", 2, &["westeurope"], json!({})).await;
    env.wait_routed("westeurope", &["acme", "globex"]).await;
    env.wait_settled("westeurope").await;
    let before = env.workload("westeurope").await.unwrap();
    let generation = before.metadata.generation.unwrap();
    let hash = before
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["telemux.io/config-hash"]
        .clone();

    let patch = json!({ "spec": { "redaction": { "blockedValues": ["CUST-[0-9]{6}"] } } });
    env.ns
        .api::<TelemetryTenant>()
        .patch("acme", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();

    eventually(
        "the redaction to reach the rendered config",
        WAIT,
        || async {
            let cm = env
                .ns
                .api::<ConfigMap>()
                .get(&names::config_map("westeurope"))
                .await
                .ok()?;
            cm.data?["config.yaml"]
                .contains("CUST-[0-9]{6}")
                .then_some(())
        },
    )
    .await;
    env.wait_settled("westeurope").await;
    let after = env.workload("westeurope").await.unwrap();
    assert_eq!(
        after.metadata.generation.unwrap(),
        generation + 1,
        "exactly one rollout"
    );
    let new_hash = after
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["telemux.io/config-hash"]
        .clone();
    assert_ne!(new_hash, hash);
    let revisions = env
        .ns
        .api::<ControllerRevision>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(revisions.items.len(), 2, "one revision before, one after");
    // The other tenant's pipeline is untouched by acme's additions.
    let config = env
        .ns
        .api::<ConfigMap>()
        .get(&names::config_map("westeurope"))
        .await
        .unwrap()
        .data
        .unwrap()["config.yaml"]
        .clone();
    let config: Value = serde_saphyr::from_str(&config).unwrap();
    assert!(config["processors"]["redaction/tenant_acme"].is_object());
    assert!(
        config["processors"]
            .get("redaction/tenant_globex")
            .is_none()
    );
    // Defined is not enough: acme's redaction must run in each of acme's pipelines, and in none
    // of globex's.
    let runs_acmes_redaction = |pipeline: &str| {
        config["service"]["pipelines"][pipeline]["processors"]
            .as_array()
            .unwrap_or_else(|| panic!("pipeline {pipeline} has no processors"))
            .iter()
            .any(|p| p == "redaction/tenant_acme")
    };
    for signal in ["traces", "logs", "metrics"] {
        assert!(
            runs_acmes_redaction(&format!("{signal}/tenant_acme")),
            "{signal}/tenant_acme runs redaction/tenant_acme"
        );
        assert!(
            !runs_acmes_redaction(&format!("{signal}/tenant_globex")),
            "{signal}/tenant_globex does not run redaction/tenant_acme"
        );
    }
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_reconcile_without_change_writes_nothing() {
    let env = setup("no-op-reconcile").await;
    env.collector("westeurope", "westeurope").await;
    env.tenant("acme", 1, &["westeurope"], json!({})).await;
    env.tenant("globex", 2, &["westeurope"], json!({})).await;
    env.wait_routed("westeurope", &["acme", "globex"]).await;
    env.wait_condition("tenant", "acme", "Ready", "True").await;
    env.wait_condition("tenant", "globex", "Ready", "True")
        .await;
    env.wait_settled("westeurope").await;
    let before = env.resource_version_map("westeurope").await;

    // Touch the collector and both tenants without changing their specs: every controller
    // reconciles again.
    let collectors_before = env.operator.metrics.reconciliations_of("collector");
    let tenants_before = env.operator.metrics.reconciliations_of("tenant");
    let poke = json!({ "metadata": { "annotations": { "example.com/poke": "1" } } });
    env.ns
        .api::<RegionalCollector>()
        .patch("westeurope", &PatchParams::default(), &Patch::Merge(&poke))
        .await
        .unwrap();
    let mut poked = BTreeMap::new();
    for tenant in ["acme", "globex"] {
        let answer = env
            .ns
            .api::<TelemetryTenant>()
            .patch(tenant, &PatchParams::default(), &Patch::Merge(&poke))
            .await
            .unwrap();
        poked.insert(format!("tenant/{tenant}"), answer.resource_version());
    }
    eventually("both controllers to reconcile again", WAIT, || async {
        let c = env.operator.metrics.reconciliations_of("collector");
        let t = env.operator.metrics.reconciliations_of("tenant");
        (c > collectors_before && t >= tenants_before + 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = env.resource_version_map("westeurope").await;
    // The annotation gave each tenant the resourceVersion the poke answered with; a status
    // write by the reconcile that followed would have moved it again. Everything else stayed.
    let mut expected = before;
    for (tenant, version) in poked {
        let compared = expected.insert(tenant.clone(), version);
        assert!(compared.is_some(), "{tenant} is compared, not dropped");
    }
    assert_eq!(expected, after);
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn deleting_a_tenant_removes_its_route_credential_and_secrets() {
    let env = setup("delete-tenant").await;
    env.collector("westeurope", "westeurope").await;
    env.tenant("acme", 1, &["westeurope"], json!({})).await;
    env.tenant("globex", 2, &["westeurope"], json!({})).await;
    env.wait_routed("westeurope", &["acme", "globex"]).await;
    env.wait_condition("tenant", "acme", "Ready", "True").await;
    let secrets = env.ns.api::<Secret>();
    assert!(
        secrets
            .get_opt(&names::tenant_credentials("acme"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        secrets
            .get_opt(&names::tenant_connection_string("acme"))
            .await
            .unwrap()
            .is_some()
    );

    env.ns
        .api::<TelemetryTenant>()
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_routed("westeurope", &["globex"]).await;
    eventually(
        "acme's credential to leave the collector's Secret",
        WAIT,
        || async {
            let secret = secrets
                .get(&names::collector_secret("westeurope"))
                .await
                .ok()?;
            let data = secret.data?;
            let htpasswd = String::from_utf8(data["htpasswd"].0.clone()).ok()?;
            (!htpasswd.contains("acme:") && !data.contains_key("tenant-acme.connection-string"))
                .then_some(())
        },
    )
    .await;
    eventually("acme's Secrets to be garbage collected", WAIT, || async {
        let creds = secrets
            .get_opt(&names::tenant_credentials("acme"))
            .await
            .ok()?;
        let cs = secrets
            .get_opt(&names::tenant_connection_string("acme"))
            .await
            .ok()?;
        (creds.is_none() && cs.is_none()).then_some(())
    })
    .await;
    env.wait_condition("tenant", "globex", "Ready", "True")
        .await;
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn an_invalid_tenant_is_reported_and_isolated() {
    let env = setup("invalid-tenant").await;
    env.collector("westeurope", "westeurope").await;
    env.tenant("good", 1, &["westeurope"], json!({})).await;
    env.tenant(
        "badregex",
        2,
        &["westeurope"],
        json!({ "redaction": { "blockedValues": ["(unclosed"] } }),
    )
    .await;
    env.tenant_without_secret("nosecret", &["westeurope"], json!({}))
        .await;
    env.secret(
        "badcs-ai-source",
        "connection-string",
        "IngestionEndpoint=https://x/",
    )
    .await;
    env.tenant_without_secret("badcs", &["westeurope"], json!({}))
        .await;

    let (reason, message) = env
        .wait_condition("tenant", "badregex", "Ready", "False")
        .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("redaction.blockedValues[0]") && message.contains("(unclosed"),
        "{message}"
    );
    let (reason, message) = env
        .wait_condition("tenant", "nosecret", "Ready", "False")
        .await;
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("nosecret-ai-source"), "{message}");
    let (reason, message) = env
        .wait_condition("tenant", "badcs", "Ready", "False")
        .await;
    assert_eq!(reason, "InvalidConnectionString");
    assert!(message.contains("InstrumentationKey"), "{message}");

    env.wait_routed("westeurope", &["good"]).await;
    env.wait_condition("tenant", "good", "Ready", "True").await;
    env.wait_condition("collector", "westeurope", "Ready", "True")
        .await;
    let status = env
        .ns
        .api::<RegionalCollector>()
        .get("westeurope")
        .await
        .unwrap()
        .status
        .unwrap();
    let rejected: BTreeMap<String, String> = status
        .rejected_tenants
        .iter()
        .map(|r| (r.name.clone(), r.reason.clone()))
        .collect();
    assert_eq!(
        rejected.get("badregex").map(String::as_str),
        Some("InvalidSpec")
    );

    // Fixing the missing Secret is noticed without touching the tenant.
    env.secret(
        "nosecret-ai-source",
        "connection-string",
        &Env::connection_string(7),
    )
    .await;
    env.wait_condition("tenant", "nosecret", "Ready", "True")
        .await;
    env.wait_routed("westeurope", &["good", "nosecret"]).await;
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    no_plane,
    ignore = "needs the local plane: TELEMUX_TEST_KUBECONFIG (make cluster-up)"
)]
async fn the_api_server_rejects_invalid_specs_with_readable_messages() {
    let client = plane_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "admission").await;
    let api = ns.api::<TelemetryTenant>();
    let base = json!({
        "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
        "metadata": { "name": "t" },
        "spec": {
            "tenantId": "acme", "regions": ["westeurope"],
            "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
        }
    });
    let reject = |mutate: &dyn Fn(&mut Value), expected: &'static str| {
        let mut object = base.clone();
        mutate(&mut object);
        let api = api.clone();
        async move {
            let result = api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value::<TelemetryTenant>(object).unwrap(),
                )
                .await;
            match result {
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 422, "{status:?}");
                    assert!(
                        status.message.contains(expected),
                        "message {:?} lacks {expected:?}",
                        status.message
                    );
                }
                other => panic!("expected a rejection mentioning {expected:?}, got {other:?}"),
            }
        }
    };
    reject(
        &|o| o["spec"]["tenantId"] = "Bad_Id".into(),
        "spec.tenantId",
    )
    .await;
    reject(&|o| o["spec"]["regions"] = json!([]), "spec.regions").await;
    reject(
        &|o| o["spec"]["regions"] = json!(["a", "a"]),
        "Duplicate value",
    )
    .await;
    reject(
        &|o| o["spec"]["applicationInsights"]["provision"] = json!({ "subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "rg", "location": "westeurope" }),
        "set exactly one of applicationInsights.provision or applicationInsights.existing",
    )
    .await;
    reject(
        &|o| o["spec"]["sampling"] = json!({ "percentage": 0 }),
        "sampling.percentage must be greater than 0",
    )
    .await;
    reject(
        &|o| o["spec"]["sampling"] = json!({ "percentage": 150 }),
        "spec.sampling.percentage",
    )
    .await;

    // Immutable tenantId, through the real kubectl as a user would meet it.
    api.create(
        &PostParams::default(),
        &serde_json::from_value::<TelemetryTenant>(base.clone()).unwrap(),
    )
    .await
    .unwrap();
    let mut changed = base.clone();
    changed["spec"]["tenantId"] = "other".into();
    changed["metadata"]["namespace"] = ns.name.clone().into();
    let kubeconfig = std::env::var(support::KUBECONFIG_ENV).unwrap();
    let mut child = std::process::Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&changed).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "kubectl accepted a tenantId change"
    );
    assert!(
        stderr.contains("tenantId is immutable"),
        "kubectl said: {stderr}"
    );

    // A collector's queue volume is its StatefulSet's claim template: fixed once created,
    // whether it was set or defaulted.
    let collectors = ns.api::<RegionalCollector>();
    let collector: RegionalCollector = serde_json::from_value(json!({
        "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
        "metadata": { "name": "westeurope" },
        "spec": { "region": "westeurope" }
    }))
    .unwrap();
    collectors
        .create(&PostParams::default(), &collector)
        .await
        .unwrap();
    let resize = json!({ "spec": { "queueVolume": { "size": "20Gi" } } });
    let refused = collectors
        .patch("westeurope", &PatchParams::default(), &Patch::Merge(resize))
        .await
        .expect_err("a queue volume change was accepted");
    assert!(
        refused.to_string().contains("queueVolume is immutable"),
        "{refused}"
    );
    ns.delete().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_burst_of_tenants_causes_few_rollouts() {
    let env = setup("burst").await;
    env.collector("westeurope", "westeurope").await;
    env.tenant("first", 100, &["westeurope"], json!({})).await;
    env.wait_routed("westeurope", &["first"]).await;
    env.wait_settled("westeurope").await;
    let generation = env
        .workload("westeurope")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();

    let names: Vec<String> = (0..20).map(|i| format!("burst-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        env.tenant(name, i as u32 + 1, &["westeurope"], json!({}))
            .await;
    }
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.push("first");
    env.wait_routed("westeurope", &expected).await;
    env.wait_settled("westeurope").await;
    let rollouts = env
        .workload("westeurope")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap()
        - generation;
    // Each tenant needs its credential and connection string before it can be routed, so a
    // burst settles in a few renders; without coalescing it would be about one per tenant.
    assert!(
        (1..=5).contains(&rollouts),
        "20 new tenants caused {rollouts} rollouts"
    );
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn a_config_the_collector_rejects_is_never_rolled_out() {
    // The operator validates with it (`Operator::test_settings`): this test needs it there.
    support::require_collector_binary();
    let env = setup("collector-rejects").await;
    env.collector("westeurope", "westeurope").await;
    env.tenant("good", 1, &["westeurope"], json!({})).await;
    env.wait_routed("westeurope", &["good"]).await;
    let (reason, _) = env
        .wait_condition("collector", "westeurope", "ConfigValid", "True")
        .await;
    assert_eq!(reason, "Validated");

    // Rust's regex accepts \p{Emoji}; the collector's RE2 does not. Only that tenant is left out.
    env.tenant(
        "emoji",
        2,
        &["westeurope"],
        json!({ "redaction": { "blockedValues": ["\\p{Emoji}"] } }),
    )
    .await;
    env.tenant("other", 3, &["westeurope"], json!({})).await;
    let message = env
        .wait_reason("tenant", "emoji", "Routed", "False", "ConfigRejected")
        .await;
    assert!(message.contains("error parsing regexp"), "{message}");
    env.wait_routed("westeurope", &["good", "other"]).await;
    env.wait_condition("tenant", "other", "Ready", "True").await;
    eventually("ConfigValid to name the tenant left out", WAIT, || async {
        let (status, reason, message) = env
            .condition("collector", "westeurope", "ConfigValid")
            .await?;
        (status == "True" && reason == "Validated" && message.contains("emoji")).then_some(())
    })
    .await;
    env.wait_settled("westeurope").await;
    let live_hash = |d: StatefulSet| {
        d.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["telemux.io/config-hash"]
            .clone()
    };
    let before = live_hash(env.workload("westeurope").await.unwrap());
    let config_before = env
        .ns
        .api::<ConfigMap>()
        .get(&names::config_map("westeurope"))
        .await
        .unwrap()
        .data;

    // A baseline the collector rejects blames no tenant: nothing is rolled out at all.
    let patch = json!({ "spec": { "redaction": { "blockedValues": ["\\p{Emoji}"] } } });
    env.ns
        .api::<RegionalCollector>()
        .patch("westeurope", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let message = env
        .wait_reason(
            "collector",
            "westeurope",
            "ConfigValid",
            "False",
            "ConfigRejected",
        )
        .await;
    assert!(message.contains("error parsing regexp"), "{message}");
    env.wait_quiet("westeurope").await;
    assert_eq!(
        live_hash(env.workload("westeurope").await.unwrap()),
        before,
        "the last good config stays live"
    );
    assert_eq!(
        env.ns
            .api::<ConfigMap>()
            .get(&names::config_map("westeurope"))
            .await
            .unwrap()
            .data,
        config_before
    );
    let (reason, _) = env
        .wait_condition("collector", "westeurope", "Ready", "False")
        .await;
    assert_eq!(reason, "ConfigRejected");
    env.wait_condition("tenant", "good", "Ready", "True").await;
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_problem_that_comes_back_is_one_event_with_a_count() {
    let env = setup("event-series").await;
    use k8s_openapi::api::events::v1::Event;
    env.tenant_without_secret("flappy", &["westeurope"], json!({}))
        .await;
    let not_found = || {
        env.wait_reason(
            "tenant",
            "flappy",
            "ApplicationInsightsReady",
            "False",
            "SecretNotFound",
        )
    };
    not_found().await;
    env.secret(
        "flappy-ai-source",
        "connection-string",
        &Env::connection_string(1),
    )
    .await;
    env.wait_condition("tenant", "flappy", "ApplicationInsightsReady", "True")
        .await;
    env.ns
        .api::<Secret>()
        .delete("flappy-ai-source", &DeleteParams::default())
        .await
        .unwrap();
    not_found().await;
    // The second SecretNotFound is folded into the first event (a series), not a new one.
    let events = env.ns.api::<Event>();
    eventually("one SecretNotFound event with a count", WAIT, || async {
        let found: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("SecretNotFound")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("flappy")
            })
            .collect();
        let [event] = found.as_slice() else {
            return None;
        };
        (event.series.as_ref()?.count >= 2).then_some(())
    })
    .await;
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_collector_too_small_for_its_queues_is_rolled_out_with_a_warning() {
    use k8s_openapi::api::events::v1::Event;
    let env = setup("queue-budget").await;
    // 256 KiB: the smallest batches of one tenant's three exporters no longer fit half of
    // memory_limiter's soft limit.
    let collector: RegionalCollector = serde_json::from_value(json!({
        "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
        "metadata": { "name": "tiny" },
        "spec": { "region": "westeurope", "replicas": 1,
                  "resources": { "limits": { "memory": "256Ki" } } }
    }))
    .unwrap();
    env.ns
        .api::<RegionalCollector>()
        .create(&PostParams::default(), &collector)
        .await
        .unwrap();
    env.tenant("acme", 1, &["westeurope"], json!({})).await;
    // Still rolled out: refusing would stop every tenant of the region.
    env.wait_routed("tiny", &["acme"]).await;
    let events = env.ns.api::<Event>();
    let note = eventually("a QueueMemoryBudgetExceeded warning", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("QueueMemoryBudgetExceeded")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("tiny")
            })
            .and_then(|e| (e.type_.as_deref() == Some("Warning")).then_some(e.note?))
    })
    .await;
    assert!(note.contains("resources.limits.memory"), "{note}");
    env.teardown().await;
}

impl Env {
    async fn sharded_collector(&self, name: &str, max_per_shard: u32) {
        let collector: RegionalCollector = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
            "metadata": { "name": name },
            "spec": { "region": "westeurope", "replicas": 1,
                      "sharding": { "maxTenantsPerShard": max_per_shard } }
        }))
        .unwrap();
        self.ns
            .api::<RegionalCollector>()
            .create(&PostParams::default(), &collector)
            .await
            .unwrap();
    }

    /// Tenants named `names` (numbered as listed), created a few at a time.
    async fn tenants(&self, names: &[String], first: u32) {
        use futures::StreamExt;
        let creates = names.iter().zip(first..).map(|(name, n)| async move {
            self.tenant(name, n, &["westeurope"], json!({})).await;
        });
        futures::stream::iter(creates)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }

    /// Each tenant's shard, from its status, once every tenant in `tenants` has one and the
    /// collector lists `shards` shards.
    async fn wait_assignments(
        &self,
        collector: &str,
        tenants: &[String],
        shards: usize,
    ) -> BTreeMap<String, u32> {
        eventually(
            &format!("{} tenants assigned over {shards} shards", tenants.len()),
            WAIT,
            || async {
                let status = self
                    .ns
                    .api::<RegionalCollector>()
                    .get(collector)
                    .await
                    .ok()?
                    .status?;
                if status.shards.len() != shards {
                    return None;
                }
                let listed = self
                    .ns
                    .api::<TelemetryTenant>()
                    .list(&ListParams::default())
                    .await
                    .ok()?;
                let shard_of: BTreeMap<String, u32> = listed
                    .items
                    .into_iter()
                    .filter_map(|t| {
                        let name = t.name_any();
                        let endpoint = t
                            .status?
                            .endpoints
                            .into_iter()
                            .find(|e| e.collector == collector)?;
                        Some((name, endpoint.shard))
                    })
                    .collect();
                tenants
                    .iter()
                    .map(|t| Some((t.clone(), *shard_of.get(t)?)))
                    .collect()
            },
        )
        .await
    }

    /// The collector's shard StatefulSets, by shard.
    async fn shard_stateful_sets(&self, collector: &str) -> BTreeMap<u32, StatefulSet> {
        let list = self
            .ns
            .api::<StatefulSet>()
            .list(&ListParams::default().labels(&format!("telemux.io/collector={collector}")))
            .await
            .unwrap();
        list.items
            .into_iter()
            .map(|s| (s.labels()["telemux.io/shard"].parse().unwrap(), s))
            .collect()
    }

    /// Each shard StatefulSet's generation, by shard: it moves with every change to its spec
    /// (a rollout of its pods, or a resize).
    async fn shard_generations(&self, collector: &str) -> BTreeMap<u32, i64> {
        let sets = self.shard_stateful_sets(collector).await;
        sets.into_iter()
            .map(|(shard, s)| (shard, s.metadata.generation.unwrap()))
            .collect()
    }

    /// The config hash each shard's pods run, by shard.
    async fn shard_config_hashes(&self, collector: &str) -> BTreeMap<u32, String> {
        let sets = self.shard_stateful_sets(collector).await;
        sets.into_iter()
            .map(|(shard, s)| {
                let template = s.spec.unwrap().template.metadata.unwrap();
                let hash = template.annotations.unwrap()["telemux.io/config-hash"].clone();
                (shard, hash)
            })
            .collect()
    }
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn shards_keep_their_tenants_for_life_and_roll_alone() {
    const PER_SHARD: u32 = 50;
    let env = setup("shards").await;
    env.sharded_collector("eu", PER_SHARD).await;
    let names_of = |range: std::ops::RangeInclusive<u32>| -> Vec<String> {
        range.map(|i| format!("t{i}")).collect()
    };
    env.tenants(&names_of(1..=PER_SHARD), 1).await;
    let first = env
        .wait_assignments("eu", &names_of(1..=PER_SHARD), 1)
        .await;

    // Fifty more, to a region whose only shard is full: one new shard; no one moves.
    let newcomers = names_of(PER_SHARD + 1..=2 * PER_SHARD);
    env.tenants(&newcomers, PER_SHARD + 1).await;
    let everyone = names_of(1..=2 * PER_SHARD);
    let grown = env.wait_assignments("eu", &everyone, 2).await;
    for (tenant, shard) in &first {
        assert_eq!(
            grown[tenant], *shard,
            "{tenant} moved when tenants were added"
        );
    }
    let new_shards: BTreeSet<u32> = newcomers.iter().map(|t| grown[t]).collect();
    assert_eq!(new_shards.len(), 1, "the newcomers share one shard");
    assert!(
        !new_shards.contains(&first["t1"]),
        "the newcomers are not in the full shard"
    );

    // Every tenant's Secret names the Service of its own shard, and that Service exists.
    let secrets = env
        .ns
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let endpoint_of: BTreeMap<String, String> = secrets
        .items
        .into_iter()
        .filter_map(|s| {
            let tenant = s
                .name_any()
                .strip_suffix("-ingestion-credentials")?
                .to_owned();
            let grpc = s.data?.remove("endpoint.westeurope.grpc")?;
            Some((tenant, String::from_utf8(grpc.0).unwrap()))
        })
        .collect();
    for (tenant, shard) in &grown {
        let service = names::shard_workload("eu", *shard);
        assert_eq!(
            endpoint_of.get(tenant),
            Some(&format!("{service}.{}.svc:4317", env.ns.name)),
            "{tenant}'s endpoint"
        );
    }
    for shard in grown.values().collect::<BTreeSet<_>>() {
        let service = names::shard_workload("eu", *shard);
        env.ns.api::<Service>().get(&service).await.unwrap();
        env.ns
            .api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>()
            .get(&service)
            .await
            .unwrap();
    }
    env.wait_settled("eu").await;

    // A change to one tenant rolls only its shard.
    let before = env.shard_config_hashes("eu").await;
    let generations_before = env.shard_generations("eu").await;
    let patch = json!({ "spec": { "redaction": { "blockedValues": ["CUST-[0-9]{6}"] } } });
    env.ns
        .api::<TelemetryTenant>()
        .patch("t1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let changed = grown["t1"];
    let after = eventually("t1's shard to roll", WAIT, || async {
        let now = env.shard_config_hashes("eu").await;
        (now[&changed] != before[&changed]).then_some(now)
    })
    .await;
    env.wait_settled("eu").await;
    let generations_after = env.shard_generations("eu").await;
    for (shard, hash) in &before {
        if *shard != changed {
            assert_eq!(&after[shard], hash, "shard {shard} rolled for t1's change");
            assert_eq!(
                generations_after[shard], generations_before[shard],
                "shard {shard}'s StatefulSet changed for t1's change"
            );
        }
    }

    // Deleting tenants moves no one: the newcomers' shard goes with its last tenant.
    let emptied = grown[&newcomers[0]];
    for tenant in &newcomers {
        env.ns
            .api::<TelemetryTenant>()
            .delete(tenant, &DeleteParams::default())
            .await
            .unwrap();
    }
    let shrunk = env
        .wait_assignments("eu", &names_of(1..=PER_SHARD), 1)
        .await;
    assert_eq!(shrunk, first, "deleting tenants moved others");
    eventually("the emptied shard's StatefulSet to go", WAIT, || async {
        let gone = env
            .ns
            .api::<StatefulSet>()
            .get_opt(&names::shard_workload("eu", emptied))
            .await
            .ok()?
            .is_none();
        gone.then_some(())
    })
    .await;

    // A new operator (a restart, no memory) keeps every assignment.
    let Env { ns, operator } = env;
    operator.stop().await;
    let operator = Operator::start(&plane_client().await, &ns.name).await;
    let env = Env { ns, operator };
    let late = format!("t{}", 2 * PER_SHARD + 1);
    env.tenant(&late, 2 * PER_SHARD + 1, &["westeurope"], json!({}))
        .await;
    let mut everyone = names_of(1..=PER_SHARD);
    everyone.push(late.clone());
    let restarted = env.wait_assignments("eu", &everyone, 2).await;
    for (tenant, shard) in &first {
        assert_eq!(restarted[tenant], *shard, "{tenant} moved across a restart");
    }
    assert_ne!(
        restarted[&late], first["t1"],
        "the full shard took one more"
    );
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn each_shard_gets_an_autoscaler_that_owns_its_size() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let env = setup("autoscaling").await;
    env.sharded_collector("eu", 1).await;
    let autoscaling = json!({ "spec": { "autoscaling": {
        "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 75 } } });
    env.ns
        .api::<RegionalCollector>()
        .patch("eu", &PatchParams::default(), &Patch::Merge(&autoscaling))
        .await
        .unwrap();
    for (i, tenant) in ["t1", "t2"].iter().enumerate() {
        env.tenant(tenant, i as u32 + 1, &["westeurope"], json!({}))
            .await;
    }
    let tenants = ["t1".to_owned(), "t2".to_owned()];
    let shards = env.wait_assignments("eu", &tenants, 2).await;
    let autoscalers = env.ns.api::<HorizontalPodAutoscaler>();
    for shard in shards.values() {
        let name = names::shard_workload("eu", *shard);
        let hpa = eventually("each shard's autoscaler", WAIT, || async {
            autoscalers.get_opt(&name).await.ok()?
        })
        .await;
        let spec = hpa.spec.unwrap();
        assert_eq!(spec.scale_target_ref.kind, "StatefulSet");
        assert_eq!(spec.scale_target_ref.name, name);
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 4));
        let cpu = &spec.metrics.unwrap()[0];
        assert_eq!(
            cpu.resource.as_ref().unwrap().target.average_utilization,
            Some(75)
        );
    }

    // What the autoscaler sets stays: a later rollout of the shard does not reset it.
    let scaled = names::shard_workload("eu", shards["t1"]);
    let sets = env.ns.api::<StatefulSet>();
    let scale = json!({ "spec": { "replicas": 3 } });
    sets.patch_scale(&scaled, &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    let before = env.shard_config_hashes("eu").await[&shards["t1"]].clone();
    let patch = json!({ "spec": { "redaction": { "blockedValues": ["CUST-[0-9]{6}"] } } });
    env.ns
        .api::<TelemetryTenant>()
        .patch("t1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("t1's shard to roll", WAIT, || async {
        let now = env.shard_config_hashes("eu").await;
        (now[&shards["t1"]] != before).then_some(())
    })
    .await;
    let replicas = sets.get(&scaled).await.unwrap().spec.unwrap().replicas;
    assert_eq!(
        replicas,
        Some(3),
        "the rollout reset the autoscaler's choice"
    );

    // Autoscaling off: the autoscalers go and `replicas` sizes the shards again.
    let off = json!({ "spec": { "autoscaling": null } });
    env.ns
        .api::<RegionalCollector>()
        .patch("eu", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    eventually(
        "the autoscalers to go and replicas to be 1",
        WAIT,
        || async {
            let left = autoscalers
                .list(&Default::default())
                .await
                .ok()?
                .items
                .len();
            let size = sets.get(&scaled).await.ok()?.spec?.replicas;
            (left == 0 && size == Some(1)).then_some(())
        },
    )
    .await;
    env.teardown().await;
}
