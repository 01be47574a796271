//! Delivery that holds: what the collector acknowledged reaches the tenant's App Insights, each
//! item once, across restarts and rollouts, or is counted as dropped with its reason; and the
//! exporter's own counts are what App Insights accepted. The real collector runs what the
//! operator rendered; the ingestion emulator answers as Breeze does, faults included, and its
//! records, not the collector's word, are what a test counts.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use serde_json::{Value, json};
use support::dataplane::{COLLECTOR, Harness, REGION, TenantDef, ikey};
use support::otlp::{Credential, numbered_spans, post};
use support::{Operator, eventually, names};
use telemux::api::TelemetryTenant;
use telemux::api::delivery::{CodeCount, SignalFigures};
use telemux::pipeline::delivery::{
    MEMORY_LIMIT_PERCENTAGE, MEMORY_SPIKE_PERCENTAGE, parse_memory_quantity,
};
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
/// The OTLP receiver's count of spans whose request it answered with an error.
const RECEIVER_REFUSED: &str = "otelcol_receiver_refused_spans";

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

/// App Insights of key 1 answers 503; `credential`'s tenant sends spans `before-0 ..
/// before-{SPANS-1}`, all acknowledged, and the collector has tried (and failed) to deliver them.
async fn queue_during_outage(h: &Harness, collector: &LocalCollector, credential: &Credential) {
    h.ingestion.set_fault(
        &ikey(1),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    send_acknowledged(h, collector, credential, "before", SPANS, PER_REQUEST).await;
    wait_answered(h, 1, 503, 0).await;
}

async fn harness_with(test: &str, tenants: &[&str]) -> Harness {
    let tenants: Vec<(&str, Value)> = tenants.iter().map(|t| (*t, json!({}))).collect();
    harness_with_specs(test, json!({}), &tenants).await
}

/// A collector in [`REGION`] whose spec adds `collector` (e.g. resources), and tenants
/// `(name, extra spec)`, tenant `i` (from 0) under instrumentation key `ikey(i + 1)`.
async fn harness_with_specs(test: &str, collector: Value, tenants: &[(&str, Value)]) -> Harness {
    let h = harness_creating(test, collector, tenants).await;
    let names: Vec<&str> = tenants.iter().map(|(name, _)| *name).collect();
    h.wait_rendered(&names, &[]).await;
    h
}

/// [`harness_with_specs`] without waiting for the collector's configuration.
async fn harness_creating(test: &str, collector: Value, tenants: &[(&str, Value)]) -> Harness {
    let h = Harness::start(test, false).await;
    let mut spec = json!({ "region": REGION, "replicas": 1 });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), collector.as_object()) {
        spec.extend(extra.clone());
    }
    h.collector(spec).await;
    for (i, (name, extra)) in tenants.iter().enumerate() {
        h.tenant(&TenantDef {
            name,
            n: i + 1,
            regions: &[REGION],
            extra: extra.clone(),
        })
        .await;
    }
    h
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn a_restart_during_an_outage_loses_nothing() {
    let h = harness_with("delivery-restart", &["outage", "steady"]).await;
    let mut collector = h.run_collector().await;
    let outage = h.tenant_credential("outage").await;
    let steady = h.tenant_credential("steady").await;

    queue_during_outage(&h, &collector, &outage).await;
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
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn a_rollout_for_another_tenants_change_during_an_outage_loses_nothing() {
    let h = harness_with("delivery-rollout", &["outage"]).await;
    let mut collector = h.run_collector().await;
    let outage = h.tenant_credential("outage").await;
    queue_during_outage(&h, &collector, &outage).await;

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

    // The rolled pod's counts are what App Insights accepted since the roll: everything.
    for (tenant, n) in [("outage", 1), ("newcomer", 2)] {
        let accepted = h.ingestion.count_for(&ikey(n)) as f64;
        collector
            .wait_metric_at_least(SUCCEEDED, &[&exporter_label(tenant)], accepted)
            .await;
        let counted = collector
            .metric_sum(SUCCEEDED, &[&exporter_label(tenant)])
            .await;
        assert_eq!(counted, accepted, "{tenant}");
    }

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
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
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
    let h = harness_with("delivery-answers", &names).await;
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

/// How long the noisy neighbour floods, and the quiet tenants send beside it.
const FLOOD: Duration = Duration::from_secs(20);
/// Concurrent senders of the noisy tenant, each posting as soon as its last request was
/// answered, and the most requests they send in all.
const NOISY_SENDERS: usize = 8;
const NOISY_MAX_REQUESTS: usize = 2_000;
/// Spans per noisy request, each with an attribute of this many bytes.
const NOISY_SPANS: usize = 200;
const NOISY_PAYLOAD_BYTES: usize = 2 * 1024;
/// Each quiet tenant sends a request of this many spans every interval.
const QUIET_INTERVAL: Duration = Duration::from_millis(200);
const QUIET_PER_REQUEST: usize = 10;
/// Bound on one request during the flood: an answer that long in coming counts as none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Posts an OTLP/HTTP JSON trace request; the status, or 0 when no answer came.
async fn post_traces(
    client: &reqwest::Client,
    base: &str,
    credential: &Credential,
    body: String,
) -> u16 {
    match client
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/json")
        .header("authorization", credential.header())
        .body(body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(error) => {
            eprintln!("no answer to a trace request: {error}");
            0
        }
    }
}

/// `NOISY_SPANS` spans, each with a `NOISY_PAYLOAD_BYTES` attribute that no redaction pattern
/// matches.
fn noisy_body() -> String {
    let mut body = numbered_spans(&[], "noisy", 0, NOISY_SPANS);
    let payload: String = ('a'..='z').cycle().take(NOISY_PAYLOAD_BYTES).collect();
    let spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    for span in spans {
        span["attributes"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "key": "payload", "value": { "stringValue": payload } }));
    }
    body.to_string()
}

/// The containers of the collector workload's pod template (a StatefulSet, or a Deployment).
async fn workload_containers(h: &Harness) -> Option<Vec<Container>> {
    let name = support::names::workload(COLLECTOR);
    let template = match h.ns.api::<StatefulSet>().get(&name).await {
        Ok(workload) => workload.spec?.template,
        Err(_) => {
            h.ns.api::<Deployment>()
                .get(&name)
                .await
                .ok()?
                .spec?
                .template
        }
    };
    Some(template.spec?.containers)
}

/// The collector container's memory limit as the operator's workload sets it, in bytes.
async fn workload_memory_limit(h: &Harness) -> u64 {
    eventually("the collector workload's memory limit", WAIT, || async {
        let containers = workload_containers(h).await?;
        let limit = containers.iter().find_map(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get("memory")
                .cloned()
        })?;
        Some(parse_memory_quantity(&limit.0).expect("a memory quantity"))
    })
    .await
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn one_tenant_flooding_a_failing_app_insights_costs_no_other_tenant_a_request() {
    const MIB: u64 = 1024 * 1024;
    let memory = "256Mi";
    let quiet = ["quiet-a", "quiet-b", "quiet-c"];
    // Tenant `noisy` is key 1, the quiet ones keys 2..=4.
    let mut tenants = vec![("noisy", json!({ "tier": "free" }))];
    tenants.extend(quiet.iter().map(|q| (*q, json!({ "tier": "standard" }))));
    let resources = json!({ "resources": {
        "limits": { "memory": memory }, "requests": { "memory": memory }
    }});
    let h = harness_with_specs("delivery-noisy", resources, &tenants).await;

    // The collector runs in a memory cgroup with the limit its workload (pod) sets.
    let limit = workload_memory_limit(&h).await;
    assert_eq!(
        Some(limit),
        parse_memory_quantity(memory),
        "the workload's memory limit"
    );
    let (config, files) = h.rendered().await;
    let mut collector =
        match LocalCollector::start_in_cgroup(&h.otelcol, &config, &files, limit).await {
            Ok(collector) => collector,
            Err(why) => {
                if std::env::var_os("CI").is_some() {
                    panic!("a memory cgroup is required under CI: {why}");
                }
                eprintln!("SKIPPED: {why}");
                h.teardown().await;
                return;
            }
        };
    // memory_limiter read the cgroup's limit: it refuses above (80 - 20) % of it.
    let limit_mib = limit * MEMORY_LIMIT_PERCENTAGE / 100 / MIB;
    let spike_mib = limit * MEMORY_SPIKE_PERCENTAGE / 100 / MIB;
    let log = collector.log_text();
    assert!(
        log.contains(&format!(r#""limit_mib": {limit_mib}"#))
            && log.contains(&format!(r#""spike_limit_mib": {spike_mib}"#)),
        "memory_limiter did not read the cgroup's limit ({limit_mib} MiB, spike {spike_mib} MiB):\n{log}"
    );

    h.ingestion.set_fault(
        &ikey(1),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + FLOOD;

    // The quiet tenants: a request of numbered spans every interval, each answer recorded.
    let mut quiet_senders = Vec::new();
    for name in quiet {
        let credential = h.tenant_credential(name).await;
        let (http, base) = (http.clone(), collector.otlp_http.clone());
        quiet_senders.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(QUIET_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut statuses = Vec::new();
            let mut slowest = Duration::ZERO;
            while tokio::time::Instant::now() < deadline {
                interval.tick().await;
                let from = statuses.len() * QUIET_PER_REQUEST;
                let body = numbered_spans(&[], name, from, QUIET_PER_REQUEST).to_string();
                let sent = tokio::time::Instant::now();
                statuses.push(post_traces(&http, &base, &credential, body).await);
                slowest = slowest.max(sent.elapsed());
            }
            (statuses, slowest)
        }));
    }
    // The noisy tenant: large requests, as fast as the collector answers.
    let noisy = h.tenant_credential("noisy").await;
    let body = noisy_body();
    let budget = Arc::new(AtomicUsize::new(0));
    let mut noisy_senders = Vec::new();
    for _ in 0..NOISY_SENDERS {
        let (http, base, credential) = (http.clone(), collector.otlp_http.clone(), noisy.clone());
        let (body, budget) = (body.clone(), budget.clone());
        noisy_senders.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while tokio::time::Instant::now() < deadline
                && budget.fetch_add(1, Ordering::Relaxed) < NOISY_MAX_REQUESTS
            {
                let status = post_traces(&http, &base, &credential, body.clone()).await;
                statuses.push(status);
                if status == 0 {
                    break;
                }
            }
            statuses
        }));
    }
    let mut quiet_statuses = Vec::new();
    let mut quiet_slowest = Duration::ZERO;
    for sender in quiet_senders {
        let (statuses, slowest) = sender.await.unwrap();
        quiet_statuses.push(statuses);
        quiet_slowest = quiet_slowest.max(slowest);
    }
    let mut noisy_statuses: Vec<u16> = Vec::new();
    for sender in noisy_senders {
        noisy_statuses.extend(sender.await.unwrap());
    }

    // The collector survived the flood within its limit.
    let cgroup = collector.cgroup().expect("the collector's cgroup");
    let oom_kills = cgroup.oom_kills().unwrap();
    let peak = cgroup.peak_bytes().unwrap();
    let exited = collector.exit_status();
    assert_eq!(
        exited,
        None,
        "the collector died during the flood (OOM kills: {oom_kills:?}); its log ends:\n{}",
        log_tail(&collector.log_text())
    );
    assert_eq!(
        oom_kills.unwrap_or_default(),
        0,
        "OOM kills in the collector's cgroup"
    );

    let count = |statuses: &[u16], status: u16| statuses.iter().filter(|s| **s == status).count();
    let noisy_accepted = count(&noisy_statuses, 200);
    let noisy_refused = count(&noisy_statuses, 503);
    let quiet_requests: usize = quiet_statuses.iter().map(Vec::len).sum();
    let quiet_refused: usize = quiet_statuses.iter().map(|s| s.len() - count(s, 200)).sum();
    eprintln!(
        "noisy: {} requests ({} spans each): {noisy_accepted} accepted, {noisy_refused} refused (503); \
         quiet: {quiet_requests} requests, {quiet_refused} not accepted, slowest answer {quiet_slowest:?}",
        noisy_statuses.len(),
        NOISY_SPANS,
    );

    // Every quiet request was accepted, and every quiet span arrived, once.
    for (i, (name, statuses)) in quiet.iter().zip(&quiet_statuses).enumerate() {
        let others: Vec<(usize, &u16)> = statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != 200)
            .collect();
        assert!(
            others.is_empty(),
            "{name}: requests (index, status) not accepted: {others:?}\n{}",
            refusal_lines(&collector.log_text())
        );
        assert!(!statuses.is_empty(), "{name} sent nothing");
        assert_delivered_once(&h, i + 2, name, statuses.len() * QUIET_PER_REQUEST).await;
    }

    // The noisy tenant filled its own queue and was refused, with a retryable status only.
    assert!(
        noisy_statuses.iter().all(|s| *s == 200 || *s == 503),
        "noisy got answers other than 200 and 503: {:?}",
        noisy_statuses
            .iter()
            .filter(|s| **s != 200 && **s != 503)
            .collect::<Vec<_>>()
    );
    assert!(noisy_accepted > 0, "noisy's queue accepted nothing");
    assert!(noisy_refused > 0, "noisy's free-tier queue never filled");
    // Each refused span is counted as dropped because the queue was full, and nothing else of
    // noisy's is dropped (App Insights' 503 is retried).
    let refused_spans = (noisy_refused * NOISY_SPANS) as f64;
    let capacity = r#"drop_code="CLIENT_PERSISTENCE_CAPACITY""#;
    collector
        .wait_metric_at_least(
            DROPPED,
            &[
                &exporter_label("noisy"),
                capacity,
                r#"telemetry_type="REQUEST""#,
            ],
            refused_spans,
        )
        .await;
    let counted = collector
        .metric_sum(DROPPED, &[&exporter_label("noisy"), capacity])
        .await;
    let all_dropped = collector
        .metric_sum(DROPPED, &[&exporter_label("noisy")])
        .await;
    let retried = collector
        .metric_sum(RETRIED, &[&exporter_label("noisy")])
        .await;
    eprintln!(
        "noisy: {refused_spans} spans refused, {counted} counted dropped with CLIENT_PERSISTENCE_CAPACITY \
         ({all_dropped} dropped in all), {retried} retried"
    );
    assert_eq!(
        counted,
        refused_spans,
        "noisy's spans dropped for a full queue vs spans of its refused requests\n{}",
        refusal_lines(&collector.log_text())
    );
    assert_eq!(
        all_dropped, refused_spans,
        "noisy's dropped spans, any reason"
    );
    // The receiver refused exactly those: nothing of any tenant was refused before it reached
    // an exporter (memory_limiter).
    let receiver_refused = collector.metric_sum(RECEIVER_REFUSED, &[]).await;
    eprintln!("the receiver refused {receiver_refused} spans");
    assert_eq!(receiver_refused, refused_spans, "{RECEIVER_REFUSED}");
    for name in quiet {
        let dropped = collector
            .metric_sum(DROPPED, &[&exporter_label(name)])
            .await;
        assert_eq!(dropped, 0.0, "{name}'s dropped spans");
    }

    // Still under the limit once the quiet backlog drained.
    let cgroup = collector.cgroup().expect("the collector's cgroup");
    let peak_now = cgroup.peak_bytes().unwrap();
    let stat = |keys: &[&str]| mib(keys.iter().find_map(|k| cgroup.stat(k).ok().flatten()));
    eprintln!(
        "collector cgroup ({:?}): limit {}; peak {} after the flood, {} at the end; now {} \
         (anonymous {}, page cache {}); hit the limit {} times; OOM kills {:?}",
        cgroup.version(),
        mib(Some(limit)),
        mib(peak),
        mib(peak_now),
        mib(cgroup.usage_bytes().ok()),
        stat(&["total_rss", "anon"]),
        stat(&["total_cache", "file"]),
        cgroup.limit_hits().unwrap(),
        cgroup.oom_kills().unwrap(),
    );
    assert_eq!(cgroup.oom_kills().unwrap().unwrap_or_default(), 0);
    if let Some(peak) = peak_now {
        assert!(peak < limit, "peak {peak} bytes reached the limit {limit}");
    }
    assert_eq!(collector.exit_status(), None, "the collector died");
    let log = collector.log_text();
    assert!(
        !log.contains("Refusing data"),
        "memory_limiter refused data:\n{}",
        refusal_lines(&log)
    );

    collector.stop().await;
    h.teardown().await;
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

/// The last lines of the collector's log, for a failure message.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The collector's log lines about refusing data or memory, for a failure message.
fn refusal_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("efus") || l.contains("emory"))
        .take(40)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tenant's figures for traces, as its status shows them.
async fn traces_figures(h: &Harness, tenant: &str) -> Option<SignalFigures> {
    let tenant = h.ns.api::<TelemetryTenant>().get(tenant).await.ok()?;
    tenant
        .status?
        .delivery?
        .total
        .into_iter()
        .find(|f| f.signal == "traces")
}

async fn delivering(h: &Harness, tenant: &str) -> Option<(String, String)> {
    let tenant = h.ns.api::<TelemetryTenant>().get(tenant).await.ok()?;
    tenant
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Delivering")
        .map(|c| (c.status, c.reason))
}

fn by_code(codes: &[CodeCount], code: &str) -> u64 {
    codes
        .iter()
        .filter(|c| c.code == code)
        .map(|c| c.items)
        .sum()
}

/// Points the shard's Service at the local collector, as the EndpointSlice controller does
/// for a pod (loopback is refused in an EndpointSlice, so through this host's address).
async fn expose_metrics(h: &Harness, collector: &LocalCollector, replica: &str) {
    let address = telemux_testkit::host_address()
        .expect("an IPv4 address of this host outside loopback (/proc/net/fib_trie)");
    let service = names::workload(COLLECTOR);
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{service}-{replica}"), "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "telemux-tests",
            "app.kubernetes.io/managed-by": "telemux",
            "app.kubernetes.io/name": "telemux-collector",
            "app.kubernetes.io/component": "collector",
        }},
        "addressType": "IPv4",
        "ports": [{ "name": "metrics", "port": collector.metrics_port(), "protocol": "TCP" }],
        "endpoints": [{ "addresses": [address.to_string()], "conditions": { "ready": true } }],
    }))
    .unwrap();
    h.ns.api::<EndpointSlice>()
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
}

/// Each tenant's `status.delivery` is what App Insights (the emulator) accepted and refused,
/// per code; a suspended tenant's drops carry their reason; `Delivering` names each case; a
/// collector restart neither loses nor counts twice what the figures already hold.
#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn each_tenants_delivery_figures_are_what_app_insights_accepted_and_refused() {
    const N: usize = 10;
    let tenants = [
        ("fine", json!({})),
        ("throttled", json!({})),
        ("rejected", json!({})),
        ("partial", json!({})),
        ("paused", json!({ "suspend": true })),
        // Picked by the collector's selector, but not allowed in its region.
        ("elsewhere", json!({ "regions": ["eastus"] })),
    ];
    let selector = json!({ "tenantSelector": { "matchLabels": { "pool": "e2e" } } });
    let h = harness_creating("delivery-figures", selector, &tenants).await;
    h.wait_rendered(
        &["fine", "partial", "rejected", "throttled"],
        &["elsewhere", "paused"],
    )
    .await;
    let status = |code, retry_after| Fault::Status { code, retry_after };
    h.ingestion
        .set_fault(&ikey(2), status(429, Some(Duration::from_secs(1))));
    h.ingestion.set_fault(&ikey(3), status(400, None));
    h.ingestion.set_fault(
        &ikey(4),
        Fault::PartialSuccess {
            reject_every: 2,
            code: 400,
        },
    );
    let (config, files) = h.rendered().await;
    let mut collector = LocalCollector::start_serving_metrics(&h.otelcol, &config, &files).await;
    expose_metrics(&h, &collector, "a").await;
    for (name, _) in &tenants {
        let credential = h.tenant_credential(name).await;
        let spans = numbered_spans(&[], name, 0, N);
        let answer = post(
            &h.http,
            &collector.otlp_http,
            "traces",
            Some(&credential),
            &spans,
        )
        .await;
        assert_eq!(answer, 200, "{name}'s spans are accepted");
    }
    // Throttled twice, then App Insights takes it.
    wait_answered(&h, 2, 429, 0).await;
    h.ingestion.clear_fault(&ikey(2));

    for (n, name) in [
        (1, "fine"),
        (2, "throttled"),
        (3, "rejected"),
        (4, "partial"),
    ] {
        let delivered = |f: &SignalFigures| f.delivered as usize == h.ingestion.count_for(&ikey(n));
        let figures = eventually(&format!("{name}'s figures"), WAIT, || async {
            traces_figures(&h, name).await.filter(|f| {
                f.accepted == N as u64 && delivered(f) && f.delivered + f.dropped == N as u64
            })
        })
        .await;
        match name {
            "fine" => assert_eq!(
                (figures.delivered, figures.dropped, figures.retried),
                (N as u64, 0, 0)
            ),
            "throttled" => assert!(
                by_code(&figures.retried_by_code, "429") >= N as u64,
                "{figures:?}"
            ),
            "rejected" => assert_eq!(by_code(&figures.dropped_by_reason, "400"), N as u64),
            _ => assert_eq!(by_code(&figures.dropped_by_reason, "400"), (N / 2) as u64),
        }
    }
    for (n, name, reason) in [
        (5, "paused", "Suspended"),
        (6, "elsewhere", "RegionNotAllowed"),
    ] {
        let excluded = eventually(&format!("{name}'s drops"), WAIT, || async {
            traces_figures(&h, name)
                .await
                .filter(|f| by_code(&f.dropped_by_reason, reason) == N as u64)
        })
        .await;
        assert_eq!((excluded.accepted, excluded.delivered), (N as u64, 0));
        assert_eq!(h.ingestion.count_for(&ikey(n)), 0);
    }

    for (name, reason) in [
        ("fine", ("True", "Delivered")),
        ("throttled", ("True", "Delivered")),
        ("partial", ("True", "Delivered")),
        ("rejected", ("False", "Rejected")),
        ("paused", ("False", "Suspended")),
        ("elsewhere", ("False", "RegionNotAllowed")),
    ] {
        let want = (reason.0.to_owned(), reason.1.to_owned());
        eventually(&format!("{name} Delivering {reason:?}"), WAIT, || async {
            (delivering(&h, name).await.as_ref() == Some(&want)).then_some(())
        })
        .await;
    }

    // A restart: a new process whose counters start at zero. The figures only grow, to what
    // App Insights holds.
    let before = traces_figures(&h, "fine").await.unwrap();
    collector.restart().await;
    let credential = h.tenant_credential("fine").await;
    let spans = numbered_spans(&[], "fine-again", 0, N);
    assert_eq!(
        post(
            &h.http,
            &collector.otlp_http,
            "traces",
            Some(&credential),
            &spans
        )
        .await,
        200
    );
    let after = eventually("fine's figures after the restart", WAIT, || async {
        let f = traces_figures(&h, "fine").await?;
        assert!(
            f.delivered >= before.delivered && f.accepted >= before.accepted,
            "figures went back: {f:?}"
        );
        (f.delivered == 2 * N as u64).then_some(f)
    })
    .await;
    assert_eq!(after.delivered as usize, h.ingestion.count_for(&ikey(1)));
    assert_eq!(after.accepted, 2 * N as u64);

    // The operator's own metrics: per tenant (enabled in tests) and in total.
    let text = {
        let mut registry = prometheus_client::registry::Registry::default();
        h.operator.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    assert!(
        text.contains(r#"telemux_tenant_items_total{tenant="fine",signal="traces",outcome="delivered",code=""} 20"#),
        "{text}"
    );
    assert!(text.contains("telemux_delivery_items_total{"), "{text}");
    // Nothing secret in any status.
    for (name, _) in &tenants {
        let tenant = h.ns.api::<TelemetryTenant>().get(name).await.unwrap();
        let status = serde_json::to_string(&tenant.status).unwrap();
        let credential = h.tenant_credential(name).await;
        assert!(!status.contains(&credential.password));
        assert!(!text.contains(&credential.password));
        assert!(!status.contains("InstrumentationKey"));
        for (other, _) in tenants.iter().filter(|(o, _)| o != name) {
            assert!(
                !status.contains(&format!("\"{other}\"")),
                "{name}'s status names {other}"
            );
        }
    }
    collector.stop().await;
    h.teardown().await;
}

/// The statistics envelopes (`Item_*_Count`) that reached `n`'s instrumentation key: per
/// metric name and dimensions, the sum of their values.
fn statistics(h: &Harness, n: usize) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut sums = BTreeMap::new();
    for envelope in h.ingestion.envelopes_for(&ikey(n)) {
        let Some(metric) = envelope
            .base_data()
            .and_then(|d| d.pointer("/metrics/0"))
            .cloned()
        else {
            continue;
        };
        let name = metric["name"].as_str().unwrap_or_default().to_owned();
        if !name.starts_with("Item_") {
            continue;
        }
        let dimensions: BTreeMap<String, String> = envelope
            .base_data()
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .filter(|(k, _)| !["language", "version", "computeType"].contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        *sums.entry((name, dimensions)).or_insert(0.0) += metric["value"].as_f64().unwrap_or(0.0);
    }
    sums
}

fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A tenant that opts in gets, in its own App Insights and at the collector's interval, the
/// Azure SDKs' statistics of its own items (successes, retries with their code); a tenant that
/// does not opt in gets none, and no statistic carries another tenant's figures.
#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn an_opted_in_tenant_gets_its_own_delivery_statistics_in_its_app_insights() {
    const N: usize = 12;
    let report = json!({ "deliveryReport": { "enabled": true } });
    let tenants = [
        ("reported", report.clone()),
        ("reported-throttled", report),
        ("unreported", json!({})),
    ];
    let h = harness_with_specs(
        "delivery-statistics",
        json!({ "deliveryReportInterval": "1s" }),
        &tenants,
    )
    .await;
    let (config, _) = h.rendered().await;
    assert_eq!(config.matches("delivery_report:").count(), 2, "{config}");
    h.ingestion.set_fault(
        &ikey(2),
        Fault::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(1)),
        },
    );
    let collector = h.run_collector().await;
    for (name, _) in &tenants {
        let credential = h.tenant_credential(name).await;
        let spans = numbered_spans(&[], name, 0, N);
        assert_eq!(
            post(
                &h.http,
                &collector.otlp_http,
                "traces",
                Some(&credential),
                &spans
            )
            .await,
            200
        );
    }
    wait_answered(&h, 2, 429, 0).await;
    h.ingestion.clear_fault(&ikey(2));

    let success = (
        "Item_Success_Count".to_owned(),
        dims(&[("telemetry_type", "REQUEST")]),
    );
    for n in [1, 2] {
        eventually(
            &format!("tenant {n}'s success statistics"),
            WAIT,
            || async {
                let stats = statistics(&h, n);
                (stats.get(&success) == Some(&(N as f64))).then_some(())
            },
        )
        .await;
    }
    // What the throttled tenant's statistics say of its retries is what its exporter counted.
    let retried = statistics(&h, 2)
        .into_iter()
        .filter(|((name, d), _)| {
            name == "Item_Retry_Count" && d.get("retry.code").map(String::as_str) == Some("429")
        })
        .map(|(_, v)| v)
        .sum::<f64>();
    let counted = collector
        .metric_sum(
            RETRIED,
            &[&exporter_label("reported-throttled"), r#"retry_code="429""#],
        )
        .await;
    assert!(
        retried >= N as f64,
        "429 retries in the statistics: {retried}"
    );
    assert!(
        retried <= counted,
        "the statistics ({retried}) exceed the exporter's count ({counted})"
    );
    // The first tenant saw only successes; the statistics are not items of their own.
    assert_eq!(statistics(&h, 1).len(), 1, "{:?}", statistics(&h, 1));
    assert!(
        statistics(&h, 3).is_empty(),
        "an opted-out tenant gets no statistics"
    );
    let items = |n: usize| {
        h.ingestion
            .envelopes_for(&ikey(n))
            .iter()
            .filter(|e| e.base_type.as_deref() == Some("RequestData"))
            .count()
    };
    assert_eq!((items(1), items(2), items(3)), (N, N, N));
    for envelope in h.ingestion.envelopes_for(&ikey(1)) {
        let text = envelope.raw.to_string();
        assert!(
            !text.contains("reported-throttled") && !text.contains("unreported"),
            "{text}"
        );
    }
    collector.stop().await;
    h.teardown().await;
}

/// Two replicas of a shard each count part of a tenant's items; the operator adds them up,
/// and a new leader (the operator restarted) resumes without counting anything twice.
#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn two_replicas_and_a_new_leader_count_each_item_once() {
    const N: usize = 8;
    let mut h = harness_with("delivery-replicas", &["both"]).await;
    let (config, files) = h.rendered().await;
    let first = LocalCollector::start_serving_metrics(&h.otelcol, &config, &files).await;
    let second = LocalCollector::start_serving_metrics(&h.otelcol, &config, &files).await;
    expose_metrics(&h, &first, "a").await;
    expose_metrics(&h, &second, "b").await;
    let credential = h.tenant_credential("both").await;
    assert_eq!(send_spans(&h, &first, &credential, "one", N).await, 200);
    assert_eq!(send_spans(&h, &second, &credential, "two", N).await, 200);
    delivered_in_figures(&h, "both", 2 * N as u64).await;
    assert_eq!(h.ingestion.count_for(&ikey(1)), 2 * N);

    // A new leader: the figures go on from what the status holds.
    let client = support::plane_client().await;
    let operator = std::mem::replace(&mut h.operator, Operator::start(&client, &h.ns.name).await);
    operator.stop().await;
    assert_eq!(send_spans(&h, &second, &credential, "three", N).await, 200);
    let after = delivered_in_figures(&h, "both", 3 * N as u64).await;
    assert_eq!(after.delivered as usize, h.ingestion.count_for(&ikey(1)));
    // Still exact a few collections later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(traces_figures(&h, "both").await, Some(after));
    first.stop().await;
    second.stop().await;
    h.teardown().await;
}

async fn send_spans(
    h: &Harness,
    collector: &LocalCollector,
    credential: &Credential,
    tag: &str,
    n: usize,
) -> u16 {
    let spans = numbered_spans(&[], tag, 0, n);
    post(
        &h.http,
        &collector.otlp_http,
        "traces",
        Some(credential),
        &spans,
    )
    .await
}

/// Waits until the tenant's figures show `want` traces items accepted and delivered.
async fn delivered_in_figures(h: &Harness, tenant: &str, want: u64) -> SignalFigures {
    eventually(
        &format!("{want} delivered in {tenant}'s figures"),
        WAIT,
        || async {
            let f = traces_figures(h, tenant).await?;
            (f.delivered == want && f.accepted == want).then_some(f)
        },
    )
    .await
}
