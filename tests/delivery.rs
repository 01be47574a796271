//! Delivery that holds: what the collector acknowledged reaches the tenant's App Insights, each
//! item once, across restarts and rollouts, or is counted as dropped with its reason; and the
//! exporter's own counts are what App Insights accepted. The real collector runs what the
//! operator rendered; the ingestion emulator answers as Breeze does, faults included, and its
//! records, not the collector's word, are what a test counts.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use support::dataplane::{Harness, REGION, TenantDef, ikey};
use support::eventually;
use support::otlp::{Credential, numbered_spans, post};
use telemux_testkit::collector::LocalCollector;
use telemux_testkit::ingestion::Fault;

const WAIT: Duration = support::dataplane::WAIT;
/// Spans a tenant sends during its outage, in requests of [`PER_REQUEST`].
const SPANS: usize = 200;
const PER_REQUEST: usize = 10;

/// The exporter's counters, as the collector's Prometheus endpoint shows them.
const SUCCEEDED: &str = "telemux_appinsights_items_succeeded";
const DROPPED: &str = "telemux_appinsights_items_dropped";
const RETRIED: &str = "telemux_appinsights_items_retried";

fn exporter_label(tenant: &str) -> String {
    format!(r#"exporter="telemux_appinsights/tenant_{tenant}""#)
}

/// How often each `seq` arrived at instrumentation key `n` (Request envelopes only).
fn delivered_seqs(h: &Harness, n: usize) -> BTreeMap<String, usize> {
    let mut seqs = BTreeMap::new();
    for envelope in h.ingestion.envelopes_for(&ikey(n)) {
        if let Some(seq) = envelope.property("seq") {
            *seqs.entry(seq.to_owned()).or_insert(0) += 1;
        }
    }
    seqs
}

/// Sends spans `tag-0 .. tag-{count-1}` in requests of `per_request`, asserting the collector
/// acknowledged each request (200): from then on the collector owes their delivery.
async fn send_acknowledged(
    h: &Harness,
    collector: &LocalCollector,
    credential: &Credential,
    tag: &str,
    count: usize,
    per_request: usize,
) {
    for from in (0..count).step_by(per_request) {
        let body = numbered_spans(&[], tag, from, per_request.min(count - from));
        let status = post(
            &h.http,
            &collector.otlp_http,
            "traces",
            Some(credential),
            &body,
        )
        .await;
        assert_eq!(status, 200, "request {from} of {tag} was not acknowledged");
    }
}

/// Waits until every one of `tag-0 .. tag-{count-1}` reached key `n`; fails on any duplicate.
async fn assert_delivered_once(h: &Harness, n: usize, tag: &str, count: usize) {
    let seqs = eventually(
        &format!("{count} spans of {tag} delivered"),
        WAIT,
        || async {
            let seqs = delivered_seqs(h, n);
            let arrived = (0..count)
                .filter(|i| seqs.contains_key(&format!("{tag}-{i}")))
                .count();
            (arrived == count).then_some(seqs)
        },
    )
    .await;
    let duplicates: Vec<(&String, &usize)> = seqs
        .iter()
        .filter(|(seq, times)| seq.starts_with(&format!("{tag}-")) && **times > 1)
        .collect();
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );
}

/// Waits until App Insights answered `status` to a request carrying key `n`.
async fn wait_answered(h: &Harness, n: usize, status: u16, since: usize) {
    eventually(
        &format!("a {status} answered to key {}", ikey(n)),
        WAIT,
        || async {
            h.ingestion
                .requests()
                .iter()
                .skip(since)
                .any(|r| r.status == status && r.ikeys.contains(&ikey(n)))
                .then_some(())
        },
    )
    .await;
}

async fn harness_with(test: &str, tenants: &[&str]) -> Option<Harness> {
    let h = Harness::start(test, false).await?;
    h.collector(json!({ "region": REGION, "replicas": 1 }))
        .await;
    for (i, name) in tenants.iter().enumerate() {
        h.tenant(&TenantDef {
            name,
            n: i + 1,
            regions: &[REGION],
            extra: json!({}),
        })
        .await;
    }
    h.wait_rendered(tenants, &[]).await;
    Some(h)
}

#[tokio::test]
async fn a_restart_during_an_outage_loses_nothing() {
    let Some(h) = harness_with("delivery-restart", &["outage", "steady"]).await else {
        return;
    };
    let mut collector = h.run_collector().await;
    let outage = h.tenant_credential("outage").await;
    let steady = h.tenant_credential("steady").await;

    h.ingestion.set_fault(
        &ikey(1),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    send_acknowledged(&h, &collector, &outage, "before", SPANS, PER_REQUEST).await;
    wait_answered(&h, 1, 503, 0).await;
    // The other tenant is served throughout.
    send_acknowledged(&h, &collector, &steady, "steady", PER_REQUEST, PER_REQUEST).await;
    assert_delivered_once(&h, 2, "steady", PER_REQUEST).await;

    // SIGTERM, as every rollout does, while App Insights still fails; then the same volume.
    collector.restart().await;
    let requests_before = h.ingestion.requests().len();
    // The restored queue is retried, still against the outage.
    wait_answered(&h, 1, 503, requests_before).await;
    assert!(
        delivered_seqs(&h, 1).is_empty(),
        "nothing can have arrived during the outage"
    );
    h.ingestion.clear_fault(&ikey(1));
    assert_delivered_once(&h, 1, "before", SPANS).await;

    // The restarted exporter's count is what App Insights accepted since.
    collector
        .wait_metric_at_least(
            SUCCEEDED,
            &[&exporter_label("outage"), r#"telemetry_type="REQUEST""#],
            SPANS as f64,
        )
        .await;
    let counted = collector
        .metric_sum(SUCCEEDED, &[&exporter_label("outage")])
        .await;
    assert_eq!(counted, h.ingestion.count_for(&ikey(1)) as f64);

    collector.stop().await;
    h.teardown().await;
}

#[tokio::test]
async fn a_rollout_for_another_tenants_change_during_an_outage_loses_nothing() {
    let Some(h) = harness_with("delivery-rollout", &["outage"]).await else {
        return;
    };
    let mut collector = h.run_collector().await;
    let outage = h.tenant_credential("outage").await;
    h.ingestion.set_fault(
        &ikey(1),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    send_acknowledged(&h, &collector, &outage, "before", SPANS, PER_REQUEST).await;
    wait_answered(&h, 1, 503, 0).await;

    // Another tenant joins the region: the operator renders a new config and rolls the
    // collector; the pod is replaced, its queue volume stays.
    let template = h.pod_template_annotations().await;
    h.tenant(&TenantDef {
        name: "newcomer",
        n: 2,
        regions: &[REGION],
        extra: json!({}),
    })
    .await;
    h.wait_rendered(&["newcomer", "outage"], &[]).await;
    eventually("the collector's pod template to change", WAIT, || async {
        (h.pod_template_annotations().await != template).then_some(())
    })
    .await;
    let (config, files) = h.rendered().await;
    collector.roll_to(&config, &files).await;

    let newcomer = h.tenant_credential("newcomer").await;
    send_acknowledged(
        &h,
        &collector,
        &newcomer,
        "newcomer",
        PER_REQUEST,
        PER_REQUEST,
    )
    .await;
    assert_delivered_once(&h, 2, "newcomer", PER_REQUEST).await;
    h.ingestion.clear_fault(&ikey(1));
    assert_delivered_once(&h, 1, "before", SPANS).await;

    collector.stop().await;
    h.teardown().await;
}

/// One tenant per kind of answer App Insights gives.
struct Case {
    name: &'static str,
    fault: Fault,
    /// Whether the fault is lifted once it was hit (a transient outage), or stays.
    lifted: bool,
}

#[tokio::test]
async fn every_answer_of_app_insights_is_handled_and_counted_truthfully() {
    let status = |code, retry_after| Fault::Status { code, retry_after };
    let cases = [
        // 206: every 3rd item 500 (retryable: only those are resent), every 4th 400 (dropped).
        Case {
            name: "partial-retry",
            fault: Fault::PartialSuccess {
                reject_every: 3,
                code: 500,
            },
            lifted: false,
        },
        Case {
            name: "partial-drop",
            fault: Fault::PartialSuccess {
                reject_every: 4,
                code: 400,
            },
            lifted: false,
        },
        Case {
            name: "throttled",
            fault: status(429, Some(Duration::from_secs(4))),
            lifted: true,
        },
        Case {
            name: "capped",
            fault: status(439, None),
            lifted: true,
        },
        Case {
            name: "payment",
            fault: status(402, None),
            lifted: false,
        },
        Case {
            name: "invalid",
            fault: status(400, None),
            lifted: false,
        },
        Case {
            name: "failing",
            fault: status(500, None),
            lifted: true,
        },
    ];
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let Some(h) = harness_with("delivery-answers", &names).await else {
        return;
    };
    let collector = h.run_collector().await;
    const SENT: usize = 30;
    for (i, case) in cases.iter().enumerate() {
        h.ingestion.set_fault(&ikey(i + 1), case.fault.clone());
        let credential = h.tenant_credential(case.name).await;
        // One request: one batch, so the request after a fault is its retry.
        send_acknowledged(&h, &collector, &credential, case.name, SENT, SENT).await;
    }
    for (i, case) in cases.iter().enumerate() {
        let code = match case.fault {
            Fault::Status { code, .. } => code,
            Fault::PartialSuccess { .. } => 206,
        };
        wait_answered(&h, i + 1, code, 0).await;
        if case.lifted {
            h.ingestion.clear_fault(&ikey(i + 1));
        }
    }

    // Retryable answers end in delivery, each item once.
    for (i, name) in [
        (0, "partial-retry"),
        (2, "throttled"),
        (3, "capped"),
        (6, "failing"),
    ] {
        assert_delivered_once(&h, i + 1, name, SENT).await;
    }
    // Permanent answers are never retried: each item was offered once.
    for (i, name) in [(1, "partial-drop"), (4, "payment"), (5, "invalid")] {
        let offered: usize = eventually(&format!("{name}'s items answered"), WAIT, || async {
            let offered: usize = h
                .ingestion
                .requests()
                .iter()
                .filter(|r| r.ikeys.contains(&ikey(i + 1)))
                .map(|r| r.items_received)
                .sum();
            (offered >= SENT).then_some(offered)
        })
        .await;
        assert_eq!(offered, SENT, "{name}: items offered to App Insights");
        let delivered = delivered_seqs(&h, i + 1);
        assert!(delivered.values().all(|times| *times == 1));
        let dropped = SENT - delivered.len();
        let code = if name == "payment" { "402" } else { "400" };
        collector
            .wait_metric_at_least(
                DROPPED,
                &[&exporter_label(name), &format!(r#"drop_code="{code}""#)],
                dropped as f64,
            )
            .await;
        let counted = collector
            .metric_sum(DROPPED, &[&exporter_label(name)])
            .await;
        assert_eq!(counted, dropped as f64, "{name}: dropped count");
    }
    // Every 4th of partial-drop's items was refused; the rest arrived.
    assert_eq!(delivered_seqs(&h, 2).len(), SENT - SENT / 4);

    // 429: the retry waited for Retry-After (an HTTP date, whole seconds: at least 3 s of
    // the 4 s), well beyond the exporter's own 1 s first interval.
    let requests = h.ingestion.requests();
    let throttled: Vec<_> = requests
        .iter()
        .filter(|r| r.ikeys.contains(&ikey(3)))
        .collect();
    let first_429 = throttled.iter().find(|r| r.status == 429).unwrap();
    let next = throttled
        .iter()
        .find(|r| r.at > first_429.at)
        .expect("a retry after the 429");
    let waited = next.at.duration_since(first_429.at).unwrap();
    assert!(
        waited >= Duration::from_secs(3),
        "retried {waited:?} after a 429 with Retry-After 4 s"
    );

    // Retries are counted with the answer that caused them.
    for (name, code) in [
        ("partial-retry", "500"),
        ("throttled", "429"),
        ("capped", "439"),
        ("failing", "500"),
    ] {
        collector
            .wait_metric_at_least(
                RETRIED,
                &[&exporter_label(name), &format!(r#"retry_code="{code}""#)],
                1.0,
            )
            .await;
    }
    // The exporter's success count is what App Insights accepted, tenant by tenant, type by type.
    for (i, name) in names.iter().enumerate() {
        let accepted = h.ingestion.count_for(&ikey(i + 1));
        let counted = eventually(&format!("{name}'s success count"), WAIT, || async {
            let counted = collector
                .metric_sum(
                    SUCCEEDED,
                    &[&exporter_label(name), r#"telemetry_type="REQUEST""#],
                )
                .await;
            (counted == accepted as f64).then_some(counted)
        })
        .await;
        assert_eq!(counted, accepted as f64, "{name}");
    }

    collector.stop().await;
    h.teardown().await;
}
