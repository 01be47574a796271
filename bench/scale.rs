//! Many tenants on the local plane: how long until every tenant is Ready after the last one is
//! created, how many rollouts each shard went through, the operator's peak memory and the
//! largest shard configuration. Runs the release `telemux` binary against the plane named by
//! `TELEMUX_TEST_KUBECONFIG` (`make cluster-up`), scoped to a namespace of its own.
//!
//! `BENCH_TENANTS` (default 10000) tenants over `BENCH_REGIONS` (default 1) regions, one
//! RegionalCollector per region (1 replica, 200 tenants per shard). `make bench-scale`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use serde_json::json;
use telemux::api::{RegionalCollector, TelemetryTenant};

const CREATE_CONCURRENCY: usize = 32;
const DEADLINE: Duration = Duration::from_secs(1800);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn plane() -> Client {
    let path = std::env::var("TELEMUX_TEST_KUBECONFIG")
        .expect("TELEMUX_TEST_KUBECONFIG names the plane's kubeconfig (make cluster-up)");
    let kubeconfig = Kubeconfig::read_from(&path).expect("the plane's kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

fn region(i: usize) -> String {
    format!("region-{i}")
}

/// The operator, the release binary, scoped to `namespace`.
fn start_operator(namespace: &str, kubeconfig: &str) -> std::process::Child {
    let binary = std::env::var("TELEMUX_BIN").unwrap_or_else(|_| "target/release/telemux".into());
    let mut command = std::process::Command::new(binary);
    command
        .args(["run", "--namespace", namespace, "--log-format", "json"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    // BENCH_OPERATOR_LOG=<file> keeps the operator's log (RUST_LOG from the environment).
    if let Ok(path) = std::env::var("BENCH_OPERATOR_LOG") {
        let log = std::fs::File::create(&path).expect("the operator log file");
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        command.env("RUST_LOG", filter).stdout(log);
    }
    if let Ok(collector) = std::env::var("OTELCOL_BIN") {
        command.arg(format!("--collector-binary={collector}"));
    }
    command
        .spawn()
        .expect("the telemux binary (cargo build --release)")
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds a process has used (user + system), and those of its children it has waited
/// for (the collector `validate` runs that check each configuration), from /proc/<pid>/stat;
/// Linux counts them in clock ticks of 1/100 s.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime, stime, cutime and cstime are fields 14 to 17 of the line, 12 to 15 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        (ticks(11) + ticks(12)) / 100.0,
        (ticks(13) + ticks(14)) / 100.0,
    )
}

async fn create_tenants(client: &Client, namespace: &str, tenants: usize, regions: usize) {
    let api: Api<TelemetryTenant> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..tenants)
        .map(|i| {
            let api = api.clone();
            async move {
                let tenant: TelemetryTenant = serde_json::from_value(json!({
                    "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
                    "metadata": { "name": format!("t{i:05}") },
                    "spec": { "tenantId": format!("t{i:05}"), "regions": [region(i % regions)],
                              "applicationInsights": { "existing": { "connectionStringSecretRef":
                                  { "name": "ai-source", "key": "connection-string" } } } }
                }))
                .expect("a tenant");
                api.create(&PostParams::default(), &tenant)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await
        .expect("tenants created");
}

fn is_ready(tenant: &TelemetryTenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Follows the tenants with one watch (a LIST of 10,000 tenants every few seconds would load
/// the API server the operator is measured against) until `tenants` are Ready or `deadline`
/// passes; returns how many are.
async fn wait_ready(api: Api<TelemetryTenant>, tenants: usize, deadline: Instant) -> usize {
    let mut ready = std::collections::HashSet::new();
    let mut events = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while ready.len() < tenants {
        let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let Ok(Some(Ok(tenant))) = next else {
            if next.is_err() {
                break;
            }
            continue;
        };
        if is_ready(&tenant) {
            ready.insert(tenant.metadata.name.unwrap_or_default());
        } else if let Some(name) = &tenant.metadata.name {
            ready.remove(name);
        }
    }
    ready.len()
}

/// Rollouts per shard after its first configuration (its StatefulSet's generation less one:
/// telemux changes a shard's spec only through the pod template's config and Secret hashes),
/// and the largest shard configuration in KiB. Events would not do: kube's recorder folds a
/// collector's `ConfigRendered` events of all shards into one series.
async fn shard_figures(client: &Client, namespace: &str) -> (BTreeMap<String, i64>, usize) {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let rollouts = sets
        .list(&ListParams::default())
        .await
        .expect("statefulsets")
        .items
        .into_iter()
        .map(|s| {
            let rollouts = s.metadata.generation.unwrap_or(1) - 1;
            (s.metadata.name.unwrap_or_default(), rollouts)
        })
        .collect();
    let largest = maps
        .list(&ListParams::default())
        .await
        .expect("config maps")
        .items
        .iter()
        .filter_map(|m| m.data.as_ref()?.get("config.yaml").map(String::len))
        .max()
        .unwrap_or(0);
    (rollouts, largest / 1024)
}

#[tokio::main]
async fn main() {
    let tenants = env_or("BENCH_TENANTS", 10_000);
    let regions = env_or("BENCH_REGIONS", 1);
    let client = plane().await;
    let kubeconfig = std::env::var("TELEMUX_TEST_KUBECONFIG").unwrap_or_default();
    let namespace = format!("bench-scale-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "ai-source" },
        "stringData": { "connection-string": "InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=http://127.0.0.1:1/" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let collectors: Api<RegionalCollector> = Api::namespaced(client.clone(), &namespace);
    for r in 0..regions {
        let collector: RegionalCollector = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "RegionalCollector",
            "metadata": { "name": region(r) },
            "spec": { "region": region(r), "replicas": 1, "sharding": { "maxTenantsPerShard": 200 } }
        }))
        .unwrap();
        collectors
            .create(&PostParams::default(), &collector)
            .await
            .expect("collector");
    }
    let mut operator = start_operator(&namespace, &kubeconfig);
    let started = Instant::now();
    create_tenants(&client, &namespace, tenants, regions).await;
    let created = started.elapsed();
    let api: Api<TelemetryTenant> = Api::namespaced(client.clone(), &namespace);
    let ready = wait_ready(api, tenants, started + DEADLINE).await;
    let converged = started.elapsed().saturating_sub(created);
    let rss = peak_rss_mib(operator.id());
    let (cpu, validate_cpu) = cpu_seconds(operator.id());
    let (rollouts, largest_kib) = shard_figures(&client, &namespace).await;
    let shards: usize = collectors
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter_map(|c| c.status.as_ref())
                .map(|s| s.shards.len())
                .sum()
        })
        .unwrap_or(0);
    let too_large = collectors
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items.iter().any(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "ConfigTooLarge"))
            })
        })
        .unwrap_or(false);
    let _ = operator.kill();
    let _ = operator.wait();
    println!(
        "| tenants | regions | shards | create all | last create → all Ready | Ready | rollouts per shard (max) | operator peak RSS | operator CPU (+ collector validate) | largest shard config | ConfigTooLarge |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {tenants} | {regions} | {} | {:.1} s | {:.1} s | {ready}/{tenants} | {} | {rss:.0} MiB | {cpu:.1} s (+ {validate_cpu:.1} s) | {largest_kib} KiB | {} |",
        shards,
        created.as_secs_f64(),
        converged.as_secs_f64(),
        rollouts.values().max().copied().unwrap_or(0),
        if too_large { "yes" } else { "no" },
    );
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
}
