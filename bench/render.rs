//! Cost of planning and rendering one collector's configuration as its tenant count grows.
//! Run with `make bench-render` (or `cargo bench --bench render`); figures go to
//! bench/RESULTS.md. Times are medians of several runs; compare the per-tenant column across
//! sizes (a ratio measured in one run), not absolute numbers across machines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use telemux::api::RegionalCollectorSpec;
use telemux::pipeline::{CollectorSources, TenantSource, plan_collector, render_collector_config};

const HASH: &str = "$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWa";

fn sources(tenants: usize) -> CollectorSources {
    let spec: RegionalCollectorSpec =
        serde_json::from_value(serde_json::json!({ "region": "westeurope" })).unwrap();
    let tenants = (0..tenants)
        .map(|i| {
            let tier = ["free", "standard", "premium"][i % 3];
            let mut spec = serde_json::json!({
                "tenantId": format!("tenant-{i:05}"),
                "tier": tier,
                "regions": ["westeurope"],
                "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
            });
            if i % 10 == 0 {
                let pattern = format!("T{i}-[0-9]{{6}}");
                spec["redaction"] = serde_json::json!({ "blockedValues": [pattern] });
            }
            TenantSource {
                name: format!("tenant-{i:05}"),
                created: None,
                labels: Default::default(),
                spec: serde_json::from_value(spec).unwrap(),
                password_hash: Some(HASH.into()),
                connection_string: Some(format!(
                    "InstrumentationKey=00000000-0000-0000-0000-{i:012};IngestionEndpoint=https://westeurope-1.in.applicationinsights.azure.com/"
                )),
            }
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

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    println!("| tenants | plan (median) | render (median) | total per tenant | config size |");
    println!("|---:|---:|---:|---:|---:|");
    for tenants in [10usize, 100, 1_000, 10_000] {
        let input = sources(tenants);
        let runs = if tenants >= 10_000 { 5 } else { 15 };
        let (mut plans, mut renders, mut size) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            let started = Instant::now();
            let plan = plan_collector(black_box(&input)).unwrap();
            let planned = Instant::now();
            let rendered = render_collector_config(black_box(&plan)).unwrap();
            renders.push(planned.elapsed());
            plans.push(planned - started);
            size = rendered.yaml.len();
        }
        let (plan, render) = (median(plans), median(renders));
        println!(
            "| {tenants} | {:.2} ms | {:.2} ms | {:.1} µs | {:.1} MiB |",
            plan.as_secs_f64() * 1e3,
            render.as_secs_f64() * 1e3,
            (plan + render).as_secs_f64() * 1e6 / tenants as f64,
            size as f64 / (1024.0 * 1024.0)
        );
    }
}
