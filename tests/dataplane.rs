//! The data plane end to end: the operator renders a RegionalCollector on the local control
//! plane, the real collector runs exactly what it wrote, and real OTLP traffic sent with each
//! tenant's credential is followed into the emulated App Insights ingestion and into Azurite.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use serde_json::{Value, json};
use support::otlp::{Batch, Credential, post_all};
use support::{Operator, TestNamespace, eventually, install_crds, plane_client};
use telemux::api::{RegionalCollector, TelemetryTenant};
use telemux_testkit::azurite::{Azurite, BlobClient};
use telemux_testkit::collector::LocalCollector;
use telemux_testkit::ingestion::{Envelope, Fault, IngestionEmulator};

const WAIT: Duration = Duration::from_secs(120);
const REGION: &str = "westeurope";
const COLLECTOR: &str = "westeurope";
const CONTAINERS: [&str; 3] = ["traces", "logs", "metrics"];

/// A component the data-plane tests need: its path from `var`, or `None` (skipped) outside CI.
fn required_binary(var: &str, make_target: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if path.is_none() {
        let why = format!("{var} does not name a binary; build it with `make {make_target}`");
        if std::env::var_os("CI").is_some() {
            panic!("required under CI: {why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    path
}

/// Instrumentation keys are GUIDs; the emulator refuses anything else, like the service.
fn ikey(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A marker that no other marker contains (`m-t1-m` is not inside `m-t11-m`).
fn marker(what: &str) -> String {
    format!("m-{what}-m")
}

struct Harness {
    ns: TestNamespace,
    operator: Operator,
    ingestion: IngestionEmulator,
    azurite: Option<Azurite>,
    otelcol: PathBuf,
    http: reqwest::Client,
}

struct TenantDef<'a> {
    name: &'a str,
    n: usize,
    regions: &'a [&'a str],
    extra: Value,
}

impl Harness {
    async fn start(test: &str, with_blob: bool) -> Option<Harness> {
        let otelcol = support::require_collector_binary()?;
        let azurite_bin = if with_blob {
            Some(required_binary("AZURITE_BIN", "azurite")?)
        } else {
            None
        };
        let client = plane_client().await?;
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
        Some(Harness {
            ns,
            operator,
            ingestion,
            azurite,
            otelcol,
            http: reqwest::Client::new(),
        })
    }

    async fn teardown(self) {
        self.operator.stop().await;
        self.ns.delete().await;
    }

    async fn secret(&self, name: &str, key: &str, value: &str) {
        self.ns.create_secret(name, key, value).await;
    }

    async fn collector(&self, spec: Value) {
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
    async fn tenant(&self, def: &TenantDef<'_>) {
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
    async fn wait_rendered(&self, routed: &[&str], excluded: &[&str]) {
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

    /// Runs the real collector with the ConfigMap and Secret the operator wrote.
    async fn run_collector(&self) -> LocalCollector {
        let config = self
            .ns
            .api::<ConfigMap>()
            .get(&format!("{COLLECTOR}-collector-config"))
            .await
            .unwrap()
            .data
            .unwrap()
            .remove("config.yaml")
            .unwrap();
        let files: BTreeMap<String, Vec<u8>> = self
            .ns
            .api::<Secret>()
            .get(&format!("{COLLECTOR}-collector-secrets"))
            .await
            .unwrap()
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        LocalCollector::start(&self.otelcol, &config, &files).await
    }

    async fn credential(&self, secret: &str) -> Credential {
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

    async fn tenant_credential(&self, tenant: &str) -> Credential {
        self.credential(&format!("{tenant}-ingestion-credentials"))
            .await
    }

    /// Every envelope delivered to `tenant`'s instrumentation key, as JSON text.
    fn delivered(&self, n: usize) -> Vec<String> {
        self.ingestion
            .envelopes_for(&ikey(n))
            .iter()
            .map(|e: &Envelope| e.raw.to_string())
            .collect()
    }

    /// Waits until `n`'s ingestion has received every text in `needles` (each in some envelope).
    async fn wait_delivered(&self, n: usize, needles: &[&str]) {
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
    async fn blobs(&self) -> String {
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

fn batch(resource: &[(&str, &str)], attributes: &[(&str, &str)], body: &str) -> Batch {
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

/// PII the baseline must redact, in every place telemetry carries text.
const PII: [&str; 5] = [
    "10.20.30.40",
    "bob@example.org",
    "172.16.5.4",
    "carol@example.net",
    "192.168.77.88",
];

#[tokio::test]
async fn twenty_tenants_get_their_own_telemetry_redacted_and_nothing_else() {
    let Some(h) = Harness::start("dataplane", true).await else {
        return;
    };
    let azurite = h.azurite.as_ref().unwrap();
    h.secret(
        "regional-blob",
        "connection-string",
        &azurite.connection_string(),
    )
    .await;
    h.secret(
        "platform-ai",
        "connection-string",
        &h.ingestion.connection_string(&ikey(999)),
    )
    .await;
    h.collector(json!({
        "region": REGION,
        "replicas": 1,
        "tenantSelector": { "matchLabels": { "pool": "e2e" } },
        "regionalStorage": { "azureBlob": {
            "connectionStringSecretRef": { "name": "regional-blob", "key": "connection-string" },
            "containers": { "traces": "traces", "logs": "logs", "metrics": "metrics" }
        }},
        "platform": { "applicationInsights": { "connectionStringSecretRef": {
            "name": "platform-ai", "key": "connection-string"
        }}}
    }))
    .await;

    // t01..t20 served here; t07 adds its own pattern; `paused` is suspended; `usonly` is
    // selected by the labels but not allowed in this region.
    let served: Vec<String> = (1..=20).map(|n| format!("t{n:02}")).collect();
    for (i, name) in served.iter().enumerate() {
        let extra = if name == "t07" {
            json!({ "redaction": { "blockedValues": ["ORDER-[0-9]{6}"] } })
        } else {
            json!({})
        };
        h.tenant(&TenantDef {
            name,
            n: i + 1,
            regions: &[REGION],
            extra,
        })
        .await;
    }
    h.tenant(&TenantDef {
        name: "paused",
        n: 21,
        regions: &[REGION],
        extra: json!({ "suspend": true }),
    })
    .await;
    h.tenant(&TenantDef {
        name: "usonly",
        n: 22,
        regions: &["eastus"],
        extra: json!({}),
    })
    .await;
    let served_refs: Vec<&str> = served.iter().map(String::as_str).collect();
    h.wait_rendered(&served_refs, &["paused", "usonly"]).await;
    let collector = h.run_collector().await;
    let base = collector.otlp_http.clone();

    let mut credentials = BTreeMap::new();
    for name in served
        .iter()
        .map(String::as_str)
        .chain(["paused", "usonly"])
    {
        credentials.insert(name.to_owned(), h.tenant_credential(name).await);
    }
    let platform = h
        .credential(&format!("{COLLECTOR}-platform-credentials"))
        .await;

    // What must never arrive is sent first: the pipeline per exporter is first in, first out,
    // so once the later data has arrived, these would have too.
    // Spoofing: t02's credential claiming to be t03.
    let spoof = marker("spoof");
    let statuses = post_all(
        &h.http,
        &base,
        Some(&credentials["t02"]),
        &batch(
            &[("tenant.id", "t03"), ("marker", &spoof)],
            &[("marker", &spoof)],
            &spoof,
        ),
    )
    .await;
    assert_eq!(statuses, [200; 3], "t02's own credential is accepted");
    // A wrong password and no credential at all are refused by the receiver.
    let wrong = Credential {
        username: "t04".into(),
        password: "not-the-password".into(),
    };
    let refused = marker("refused");
    let refused_batch = batch(
        &[("tenant.id", "t04"), ("marker", &refused)],
        &[("marker", &refused)],
        &refused,
    );
    assert_eq!(
        post_all(&h.http, &base, Some(&wrong), &refused_batch).await,
        [401; 3]
    );
    assert_eq!(
        post_all(&h.http, &base, None, &refused_batch).await,
        [401; 3]
    );
    // Suspended and out-of-region tenants authenticate, and their data is dropped.
    for name in ["paused", "usonly"] {
        let m = marker(name);
        let statuses = post_all(
            &h.http,
            &base,
            Some(&credentials[name]),
            &batch(&[("marker", &m)], &[("marker", &m)], &m),
        )
        .await;
        assert_eq!(statuses, [200; 3], "{name}'s credential is valid");
    }

    // Every served tenant sends its own data; t01 also sends PII in every place it can go.
    for name in &served {
        let m = marker(name);
        let statuses = post_all(
            &h.http,
            &base,
            Some(&credentials[name]),
            &batch(
                &[("service.name", "shop"), ("marker", &m)],
                &[("marker", &m)],
                &format!("hello from {m}"),
            ),
        )
        .await;
        assert_eq!(statuses, [200; 3], "{name}'s data is accepted");
    }
    let pii = batch(
        &[("client.ip", PII[0]), ("res.canary", "canary-resource")],
        &[
            ("user.email", PII[1]),
            ("peer.ip", PII[2]),
            ("attr.canary", "canary-attribute"),
        ],
        &format!("login by {} from {} canary-body", PII[3], PII[4]),
    );
    assert_eq!(
        post_all(&h.http, &base, Some(&credentials["t01"]), &pii).await,
        [200; 3]
    );
    // A tenant's own pattern applies to that tenant only.
    for (name, order) in [("t07", "ORDER-123456"), ("t06", "ORDER-654321")] {
        let statuses = post_all(
            &h.http,
            &base,
            Some(&credentials[name]),
            &batch(&[], &[("order", order)], &format!("order {order}")),
        )
        .await;
        assert_eq!(statuses, [200; 3]);
    }
    // The platform's own credential routes by the tenant.id it sets; its items naming no
    // tenant are its own; those naming a tenant this collector does not serve are dropped.
    let routed_by_platform = marker("platform");
    let platform_own = marker("platform-own");
    let platform_unknown = marker("platform-unknown");
    for (tenant, m) in [
        (Some("t05"), &routed_by_platform),
        (None, &platform_own),
        (Some("nobody"), &platform_unknown),
    ] {
        let mut resource = vec![("marker", m.as_str())];
        resource.extend(tenant.map(|t| ("tenant.id", t)));
        let statuses = post_all(
            &h.http,
            &base,
            Some(&platform),
            &batch(&resource, &[("marker", m)], m),
        )
        .await;
        assert_eq!(statuses, [200; 3], "the platform credential is accepted");
    }

    // Delivery: every tenant's traces, logs and metrics reach its own ingestion.
    for (i, name) in served.iter().enumerate() {
        h.wait_delivered(i + 1, &[&marker(name)]).await;
        eventually(
            &format!("{name}'s traces, logs and metrics"),
            WAIT,
            || async {
                let kinds: Vec<String> = h
                    .ingestion
                    .envelopes_for(&ikey(i + 1))
                    .into_iter()
                    .filter(|e| e.raw.to_string().contains(&marker(name)))
                    .filter_map(|e| e.base_type)
                    .collect();
                ["RequestData", "MessageData", "MetricData"]
                    .iter()
                    .all(|kind| kinds.iter().any(|k| k == kind))
                    .then_some(())
            },
        )
        .await;
    }
    h.wait_delivered(1, &["canary-attribute", "canary-body", "canary-resource"])
        .await;
    h.wait_delivered(6, &["ORDER-654321"]).await;
    h.wait_delivered(7, &["order"]).await;
    h.wait_delivered(5, &[&routed_by_platform]).await;
    h.wait_delivered(999, &[&platform_own]).await;

    // Isolation: each tenant's ingestion holds its own data and only it.
    let mut cross_tenant = 0;
    for (i, name) in served.iter().enumerate() {
        for envelope in h.delivered(i + 1) {
            let foreign = served
                .iter()
                .filter(|other| *other != name)
                .any(|other| envelope.contains(&marker(other)));
            let not_its_own = !envelope.contains(&format!(r#""tenant.id":"{name}""#));
            if foreign || not_its_own {
                cross_tenant += 1;
                eprintln!("cross-tenant envelope at {name}: {envelope}");
            }
        }
    }
    assert_eq!(cross_tenant, 0, "cross-tenant envelopes");

    // Spoofing: the claim was ignored; the data is t02's (or dropped), never t03's.
    assert!(h.delivered(3).iter().all(|e| !e.contains(&spoof)));
    for envelope in h.delivered(2).iter().filter(|e| e.contains(&spoof)) {
        assert!(envelope.contains(r#""tenant.id":"t02""#), "{envelope}");
    }
    // Refused, suspended and out-of-region data reached no ingestion and no blob.
    let everything: Vec<String> = h
        .ingestion
        .envelopes()
        .iter()
        .map(|e| e.raw.to_string())
        .collect();
    let blobs = eventually("the regional copy of every tenant", WAIT, || async {
        let blobs = h.blobs().await;
        served
            .iter()
            .all(|name| blobs.contains(&marker(name)))
            .then_some(blobs)
    })
    .await;
    assert!(
        h.delivered(999)
            .iter()
            .all(|e| !e.contains(&routed_by_platform))
    );
    for never in [
        &refused,
        &marker("paused"),
        &marker("usonly"),
        &platform_unknown,
    ] {
        assert!(
            everything.iter().all(|e| !e.contains(never.as_str())),
            "{never} was delivered to an ingestion endpoint"
        );
        assert!(!blobs.contains(never.as_str()), "{never} reached the blobs");
    }
    assert!(h.delivered(21).is_empty() && h.delivered(22).is_empty());
    // ... and the drops are visible in the collector's own metrics.
    for signal in ["spans", "logs", "datapoints"] {
        collector
            .wait_metric_at_least(
                &format!("otelcol_processor_filter_{signal}_filtered"),
                &[r#"filter="filter/excluded_tenants""#],
                2.0,
            )
            .await;
    }

    // Redaction: no PII anywhere; the places it was in did arrive (canaries); tenant.id
    // survived; t07's pattern applied to t07 only.
    for value in PII.iter().chain(&["ORDER-123456"]) {
        assert!(
            everything.iter().all(|e| !e.contains(value)),
            "{value} reached an ingestion endpoint"
        );
        assert!(!blobs.contains(value), "{value} reached the regional copy");
    }
    for canary in ["canary-resource", "canary-attribute", "canary-body"] {
        assert!(blobs.contains(canary), "{canary} missing from the blobs");
    }
    assert!(blobs.contains("ORDER-654321"));
    assert!(blobs.contains(r#""tenant.id""#));

    collector.stop().await;
    h.teardown().await;
}

#[tokio::test]
async fn a_failing_ingestion_delays_only_its_own_tenant_and_loses_nothing() {
    let Some(h) = Harness::start("dataplane-faults", false).await else {
        return;
    };
    h.collector(json!({ "region": REGION, "replicas": 1 }))
        .await;
    let tenants = ["unavailable", "throttled", "healthy"];
    for (i, name) in tenants.iter().enumerate() {
        h.tenant(&TenantDef {
            name,
            n: i + 1,
            regions: &[REGION],
            extra: json!({}),
        })
        .await;
    }
    h.wait_rendered(&tenants, &[]).await;
    let collector = h.run_collector().await;

    h.ingestion.set_fault(
        &ikey(1),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    h.ingestion.set_fault(
        &ikey(2),
        Fault::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(5)),
        },
    );
    for name in tenants {
        let m = marker(name);
        let credential = h.tenant_credential(name).await;
        let statuses = post_all(
            &h.http,
            &collector.otlp_http,
            Some(&credential),
            &batch(&[("marker", &m)], &[("marker", &m)], &m),
        )
        .await;
        assert_eq!(statuses, [200; 3]);
    }

    // The healthy tenant is served while the others' ingestion is still failing.
    h.wait_delivered(3, &[&marker("healthy")]).await;
    eventually("both faults to be hit", WAIT, || async {
        let requests = h.ingestion.requests();
        let hit = |code: u16, key: &str| {
            requests
                .iter()
                .any(|r| r.status == code && r.ikeys.iter().any(|k| k == key))
        };
        (hit(503, &ikey(1)) && hit(429, &ikey(2))).then_some(())
    })
    .await;
    assert!(h.delivered(1).is_empty() && h.delivered(2).is_empty());

    // The fault clears: what was queued is delivered.
    h.ingestion.clear_fault(&ikey(1));
    h.ingestion.clear_fault(&ikey(2));
    for (i, name) in tenants.iter().enumerate() {
        h.wait_delivered(i + 1, &[&marker(name)]).await;
    }
    collector.stop().await;
    h.teardown().await;
}
