//! Throughput of the rendered pipeline through the real collector as the tenant count grows.
//!
//! For 1, 100 and 1,000 tenants: render the collector configuration telemux would roll out,
//! run the real collector with it as a local process (its Azure Monitor exporters pointed at
//! the ingestion emulator), and drive it with telemetrygen over OTLP/gRPC with one tenant's
//! credential for a fixed time. The tenant is either the first or the last entry of the routing
//! table: the routing connector evaluates its table in order, so the last entry pays for every
//! condition before it.
//!
//! Run with `make bench-throughput`; figures go to bench/RESULTS.md. Compare the ratios to the
//! 1-tenant row of the same run: these machines are shared.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use telemux::api::RegionalCollectorSpec;
use telemux::pipeline::{CollectorSources, TenantSource, plan_collector, render_collector_config};
use telemux_testkit::collector::LocalCollector;
use telemux_testkit::ingestion::IngestionEmulator;

const RUN: Duration = Duration::from_secs(15);
const WORKERS: usize = 2;

fn ikey(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn tenant_id(i: usize) -> String {
    format!("tenant-{i:05}")
}

fn sources(tenants: usize, hash: &str, ingestion: &IngestionEmulator) -> CollectorSources {
    let spec: RegionalCollectorSpec =
        serde_json::from_value(serde_json::json!({ "region": "westeurope" })).unwrap();
    let tenants = (0..tenants)
        .map(|i| TenantSource {
            name: tenant_id(i),
            created: None,
            labels: Default::default(),
            spec: serde_json::from_value(serde_json::json!({
                "tenantId": tenant_id(i),
                "regions": ["westeurope"],
                "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
            }))
            .unwrap(),
            password_hash: Some(hash.to_owned()),
            connection_string: Some(ingestion.connection_string(&ikey(i))),
        })
        .collect();
    CollectorSources {
        spec,
        platform_password_hash: None,
        platform_connection_string: None,
        blob_connection_string: None,
        tenants,
    }
}

fn binary(var: &str, make_target: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => path,
        _ => {
            eprintln!("{var} must name a binary (make {make_target})");
            std::process::exit(2);
        }
    }
}

struct Measured {
    accepted_per_second: f64,
    refused: f64,
    delivered: usize,
    accepted: f64,
}

async fn measure(
    collector: &LocalCollector,
    telemetrygen: &PathBuf,
    ingestion: &IngestionEmulator,
    tenant: usize,
    password: &str,
) -> Measured {
    let accepted_before = collector
        .metric_sum("otelcol_receiver_accepted_spans", &[])
        .await;
    let refused_before = collector
        .metric_sum("otelcol_receiver_refused_spans", &[])
        .await;
    let delivered_before = ingestion.envelopes_for(&ikey(tenant)).len();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{password}", tenant_id(tenant)));
    let started = Instant::now();
    let status = tokio::process::Command::new(telemetrygen)
        .args(["traces", "--otlp-insecure", "--rate", "0"])
        .arg(format!("--otlp-endpoint={}", collector.otlp_grpc))
        .arg(format!("--otlp-header=Authorization=\"Basic {auth}\""))
        .arg(format!("--duration={}s", RUN.as_secs()))
        .arg(format!("--workers={WORKERS}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("running telemetrygen");
    let elapsed = started.elapsed();
    assert!(status.success(), "telemetrygen failed: {status}");
    let accepted = collector
        .metric_sum("otelcol_receiver_accepted_spans", &[])
        .await
        - accepted_before;
    let refused = collector
        .metric_sum("otelcol_receiver_refused_spans", &[])
        .await
        - refused_before;
    // Delivery check: everything accepted reaches the tenant's ingestion (the exporter flushes
    // every 10 s); a throughput that loses data would be no throughput at all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0;
    while Instant::now() < deadline {
        delivered = ingestion.envelopes_for(&ikey(tenant)).len() - delivered_before;
        if delivered as f64 >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Measured {
        accepted_per_second: accepted / elapsed.as_secs_f64(),
        refused,
        delivered,
        accepted,
    }
}

#[tokio::main]
async fn main() {
    let otelcol = binary("OTELCOL_BIN", "collector");
    let telemetrygen = binary("TELEMETRYGEN_BIN", "telemetrygen");
    let credential = telemux::credentials::issue_credential().expect("a credential");

    println!(
        "| tenants | sending tenant | spans/s accepted | vs 1 tenant | refused | accepted | delivered |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut baseline = None;
    for tenants in [1usize, 100, 1_000] {
        let ingestion = IngestionEmulator::start().await.expect("the emulator");
        let plan =
            plan_collector(&sources(tenants, &credential.bcrypt_hash, &ingestion)).expect("a plan");
        let rendered = render_collector_config(&plan).expect("a config");
        let files: BTreeMap<String, Vec<u8>> = plan
            .secret_files
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        let collector = LocalCollector::start(&otelcol, &rendered.yaml, &files).await;
        let senders: &[(usize, &str)] = if tenants == 1 {
            &[(0, "only")]
        } else {
            &[(0, "first"), (tenants - 1, "last")]
        };
        for &(tenant, position) in senders {
            let m = measure(
                &collector,
                &telemetrygen,
                &ingestion,
                tenant,
                &credential.password,
            )
            .await;
            let base = *baseline.get_or_insert(m.accepted_per_second);
            println!(
                "| {tenants} | {position} | {:.0} | {:.2} | {:.0} | {:.0} | {} |",
                m.accepted_per_second,
                m.accepted_per_second / base,
                m.refused,
                m.accepted,
                m.delivered
            );
        }
        collector.stop().await;
    }
}
