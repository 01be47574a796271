//! The data plane end to end: the operator renders a RegionalCollector on the local control
//! plane, the real collector runs exactly what it wrote, and real OTLP traffic sent with each
//! tenant's credential is followed into the emulated App Insights ingestion and into Azurite.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::dataplane::{COLLECTOR, Harness, REGION, TenantDef, batch, ikey, marker};
use support::eventually;
use support::otlp::{Credential, post_all};
use telemux_testkit::ingestion::Fault;

use std::time::Duration;

const WAIT: Duration = support::dataplane::WAIT;
/// Items App Insights accepted, as the tenant's exporter counts them.
const SUCCEEDED: &str = "telemux_appinsights_items_succeeded";
/// PII the baseline must redact, in every place telemetry carries text.
const PII: [&str; 5] = [
    "10.20.30.40",
    "bob@example.org",
    "172.16.5.4",
    "carol@example.net",
    "192.168.77.88",
];

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector, no_azurite),
    ignore = "needs the local plane, helm, the collector and Azurite: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN, AZURITE_BIN (make cluster-up helm collector azurite)"
)]
async fn twenty_tenants_get_their_own_telemetry_redacted_and_nothing_else() {
    let h = Harness::start("dataplane", true).await;
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
        .credential(&support::names::platform_credentials(COLLECTOR))
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
    // ... and the drops are visible in the collector's own metrics, per tenant, signal and
    // reason: each excluded tenant's items enter its own drop filter.
    for processor in [
        "filter/suspended_paused",
        "filter/region_not_allowed_usonly",
    ] {
        for signal in ["traces", "logs", "metrics"] {
            collector
                .wait_metric_at_least(
                    "otelcol_processor_incoming_items",
                    &[
                        &format!(r#"processor="{processor}""#),
                        &format!(r#"otel_signal="{signal}""#),
                    ],
                    1.0,
                )
                .await;
        }
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
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn a_failing_ingestion_delays_only_its_own_tenant_and_loses_nothing() {
    let h = Harness::start("dataplane-faults", false).await;
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
    // Each exporter's success count is what its App Insights accepted, type by type.
    for (i, name) in tenants.iter().enumerate() {
        let mut accepted: BTreeMap<&str, f64> = BTreeMap::new();
        for envelope in h.ingestion.envelopes_for(&ikey(i + 1)) {
            let kind = match envelope.base_type.as_deref() {
                Some("RequestData") => "REQUEST",
                Some("RemoteDependencyData") => "DEPENDENCY",
                Some("MessageData") => "TRACE",
                Some("ExceptionData") => "EXCEPTION",
                Some("EventData") => "CUSTOM_EVENT",
                Some("MetricData") => "CUSTOM_METRIC",
                other => panic!("unexpected envelope type {other:?}"),
            };
            *accepted.entry(kind).or_default() += 1.0;
        }
        assert_eq!(accepted.len(), 3, "{name}: requests, messages and metrics");
        let exporter = format!(r#"exporter="telemux_appinsights/tenant_{name}""#);
        for (kind, count) in accepted {
            let label = format!(r#"telemetry_type="{kind}""#);
            collector
                .wait_metric_at_least(SUCCEEDED, &[&exporter, &label], count)
                .await;
            let counted = collector.metric_sum(SUCCEEDED, &[&exporter, &label]).await;
            assert_eq!(counted, count, "{name}: {kind} counted vs accepted");
        }
    }
    collector.stop().await;
    h.teardown().await;
}
