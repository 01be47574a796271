//! The operator binary as it runs in a pod: acting as the chart's ServiceAccount, serving
//! `/metrics`, `/livez` and `/readyz`, electing one leader among replicas, exporting its own
//! traces over OTLP, and stopping cleanly on SIGTERM.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use serde_json::json;
use support::{TestNamespace, eventually, install_crds, plane_client};
use telemux::api::TelemetryTenant;

const WAIT: Duration = Duration::from_secs(90);

/// One `telemux run` process.
struct OperatorProcess {
    name: String,
    metrics_url: String,
    child: tokio::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts the binary scoped to `namespace`, acting as the chart's ServiceAccount.
    async fn start(client: &kube::Client, namespace: &str, name: &str, extra: &[&str]) -> Self {
        support::chart::install_chart_rbac(client).await;
        let dir = tempfile::Builder::new()
            .prefix("telemux-operator-")
            .tempdir()
            .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        support::chart::write_impersonating_kubeconfig(&kubeconfig);
        let port = telemux_testkit::free_port().expect("a free loopback port");
        let log = dir.path().join("operator.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_telemux"));
        command
            .arg("run")
            .arg(format!("--namespace={namespace}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{port}"))
            .arg("--collector-debounce-ms=300")
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,telemux=debug,kube=warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .kill_on_drop(true);
        if let Some(collector) = support::collector_binary() {
            command.arg(format!("--collector-binary={}", collector.display()));
        }
        let child = command.spawn().expect("starting the operator binary");
        OperatorProcess {
            name: name.to_owned(),
            metrics_url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Status and body of one of the HTTP endpoints, `None` while it does not answer.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.metrics_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await.unwrap_or_default();
        assert!(status == 200 || status == 0, "/metrics answered {status}");
        body
    }

    /// The value of one sample, e.g. `telemux_leader` or `telemux_tenants{ready="true"}`.
    async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        sample_value(&text, series)
    }

    async fn wait_until_serving(&mut self) {
        let what = format!("{}: /livez and /readyz answer 200", self.name);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            let live = self.get("/livez").await.map(|(s, _)| s);
            let ready = self.get("/readyz").await.map(|(s, _)| s);
            if live == Some(200) && ready == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reconciliations this process ran, both controllers.
    async fn reconciliations(&self) -> f64 {
        let text = self.metrics().await;
        ["tenant", "collector"]
            .iter()
            .filter_map(|c| {
                sample_value(
                    &text,
                    &format!("telemux_reconciliations_total{{controller=\"{c}\"}}"),
                )
            })
            .sum()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("a running process");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "{} did not exit within {within:?}:\n{}",
                self.name,
                self.log_text()
            ),
        }
    }
}

/// The value of `series` (name with its exact label set) in Prometheus text.
fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

struct Env {
    client: kube::Client,
    ns: TestNamespace,
}

impl Env {
    async fn setup(test: &str) -> Env {
        let client = plane_client().await;
        install_crds(&client).await;
        let ns = TestNamespace::create(&client, test).await;
        Env { client, ns }
    }

    async fn tenant(&self, name: &str, with_secret: bool) {
        if with_secret {
            self.ns
                .create_secret(
                    &format!("{name}-ai"),
                    "connection-string",
                    "InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=https://westeurope-1.in.applicationinsights.azure.com/",
                )
                .await;
        }
        let tenant: TelemetryTenant = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
            "metadata": { "name": name },
            "spec": { "tenantId": name, "regions": ["westeurope"],
                "applicationInsights": { "existing": { "connectionStringSecretRef": {
                    "name": format!("{name}-ai"), "key": "connection-string" } } } }
        }))
        .unwrap();
        self.ns
            .api::<TelemetryTenant>()
            .create(&PostParams::default(), &tenant)
            .await
            .unwrap();
    }

    async fn collector(&self) {
        self.ns.create_collector("westeurope", "westeurope").await;
    }

    async fn ready(&self, tenant: &str) -> Option<String> {
        let api = self.ns.api::<TelemetryTenant>();
        let (status, ..) = support::condition(&api, tenant, "Ready").await?;
        Some(status)
    }

    async fn wait_ready(&self, tenant: &str, status: &str) {
        eventually(&format!("{tenant} Ready={status}"), WAIT, || async {
            (self.ready(tenant).await.as_deref() == Some(status)).then_some(())
        })
        .await;
    }

    async fn lease_holder(&self, name: &str) -> Option<String> {
        kube::Api::<Lease>::namespaced(self.client.clone(), support::chart::RELEASE_NAMESPACE)
            .get_opt(name)
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    }
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn metrics_and_probes_show_what_the_operator_does_and_sigterm_stops_it() {
    let env = Env::setup("runtime-metrics").await;
    let mut operator = OperatorProcess::start(&env.client, &env.ns.name, "solo", &[]).await;
    operator.wait_until_serving().await;
    assert_eq!(operator.get("/readyz").await.unwrap().1, "ok");

    env.collector().await;
    env.tenant("acme", true).await;
    env.tenant("broken", false).await;
    env.wait_ready("acme", "True").await;
    env.wait_ready("broken", "False").await;

    eventually("tenants and collectors by Ready state", WAIT, || async {
        let ok = operator.sample("telemux_tenants{ready=\"true\"}").await == Some(1.0)
            && operator.sample("telemux_tenants{ready=\"false\"}").await == Some(1.0)
            && operator.sample("telemux_collectors{ready=\"true\"}").await == Some(1.0);
        ok.then_some(())
    })
    .await;
    let text = operator.metrics().await;
    for series in [
        "telemux_reconciliations_total{controller=\"tenant\"}",
        "telemux_reconciliations_total{controller=\"collector\"}",
        "telemux_reconcile_duration_seconds_count{controller=\"tenant\"}",
        "telemux_reconcile_duration_seconds_count{controller=\"collector\"}",
    ] {
        let value = sample_value(&text, series).unwrap_or_default();
        assert!(value >= 1.0, "{series} = {value} in\n{text}");
    }
    assert_eq!(sample_value(&text, "telemux_leader"), Some(1.0));
    // SIGTERM: the controllers stop and the process exits 0.
    operator.signal("TERM");
    let status = operator.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status}:\n{}", operator.log_text());
    assert!(operator.log_text().contains("telemux controllers stopped"));
    env.ns.delete().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn only_the_leader_reconciles_and_a_standby_takes_over_within_the_lease() {
    let env = Env::setup("runtime-leader").await;
    // The chart grants leases in its release namespace only; a lease per test keeps
    // concurrent runs apart.
    let lease = env.ns.name.clone();
    const LEASE_SECONDS: u64 = 6;
    let election = [
        "--leader-elect".to_owned(),
        format!(
            "--leader-election-namespace={}",
            support::chart::RELEASE_NAMESPACE
        ),
        format!("--leader-election-lease-name={lease}"),
        format!("--leader-election-lease-duration={LEASE_SECONDS}"),
        "--leader-election-renew-before=2".to_owned(),
    ];
    let election: Vec<&str> = election.iter().map(String::as_str).collect();
    let mut a = OperatorProcess::start(&env.client, &env.ns.name, "replica-a", &election).await;
    let mut b = OperatorProcess::start(&env.client, &env.ns.name, "replica-b", &election).await;
    a.wait_until_serving().await;
    b.wait_until_serving().await;

    let leader_name = eventually("one replica holds the lease", WAIT, || {
        env.lease_holder(&lease)
    })
    .await;
    let (mut leader, mut standby) = if leader_name == a.name {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leader_name, leader.name);
    eventually("the leader says it leads", WAIT, || async {
        (leader.sample("telemux_leader").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(standby.sample("telemux_leader").await, Some(0.0));
    assert!(
        standby
            .get("/readyz")
            .await
            .unwrap()
            .1
            .starts_with("standby")
    );

    env.collector().await;
    env.tenant("acme", true).await;
    env.wait_ready("acme", "True").await;
    assert!(leader.reconciliations().await >= 1.0);
    assert_eq!(
        standby.reconciliations().await,
        0.0,
        "the standby reconciled while another replica held the lease"
    );

    // The leader dies without a word: the standby takes over once the lease expires.
    leader.signal("KILL");
    leader.wait_exit(Duration::from_secs(10)).await;
    let killed = Instant::now();
    eventually("the standby to take the lease", WAIT, || async {
        (standby.sample("telemux_leader").await == Some(1.0)).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    // The lease outlives its last renewal by LEASE_SECONDS; the metrics poll adds up to a second.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 2),
        "takeover took {takeover:?}, lease duration {LEASE_SECONDS}s"
    );
    assert_eq!(
        env.lease_holder(&lease).await.as_deref(),
        Some(standby.name.as_str())
    );
    env.tenant("globex", true).await;
    env.wait_ready("globex", "True").await;
    assert!(standby.reconciliations().await >= 1.0);

    // A leader shut down by SIGTERM hands the lease back at once.
    standby.signal("TERM");
    let status = standby.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status}:\n{}", standby.log_text());
    assert_eq!(
        env.lease_holder(&lease).await,
        None,
        "the lease was not released"
    );
    let _ = kube::Api::<Lease>::namespaced(env.client.clone(), support::chart::RELEASE_NAMESPACE)
        .delete(&lease, &Default::default())
        .await;
    env.ns.delete().await;
}

/// A collector that writes every span it receives over OTLP/HTTP to a file.
async fn trace_sink(binary: &Path, file: &Path) -> telemux_testkit::collector::LocalCollector {
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      http: {{}}\n      grpc: {{}}\n\
         exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
         extensions:\n  health_check: {{}}\n\
         service:\n  extensions: [health_check]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
        file.display()
    );
    telemux_testkit::collector::LocalCollector::start(binary, &config, &BTreeMap::new()).await
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm, no_collector),
    ignore = "needs the local plane, helm and the collector: TELEMUX_TEST_KUBECONFIG, HELM_BIN, OTELCOL_BIN (make cluster-up helm collector)"
)]
async fn the_operators_own_traces_reach_an_otlp_collector() {
    let env = Env::setup("runtime-otlp").await;
    let binary = support::require_collector_binary();
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans.json");
    let sink = trace_sink(&binary, &spans).await;
    let endpoint = format!("--otlp-endpoint={}", sink.otlp_http);
    let mut operator =
        OperatorProcess::start(&env.client, &env.ns.name, "traced", &[endpoint.as_str()]).await;
    operator.wait_until_serving().await;
    env.collector().await;
    env.tenant("acme", true).await;
    env.wait_ready("acme", "True").await;

    let exported = eventually("reconcile spans in the collector's file", WAIT, || async {
        let text = std::fs::read_to_string(&spans).ok()?;
        (text.contains("\"reconcile\"") && text.contains(&env.ns.name)).then_some(text)
    })
    .await;
    assert!(
        exported.contains("\"telemux\""),
        "service.name is telemux:\n{exported}"
    );
    // Names of objects, never the credentials: no connection string in any span.
    assert!(!exported.contains("InstrumentationKey="));
    operator.signal("TERM");
    assert!(operator.wait_exit(Duration::from_secs(20)).await.success());
    sink.stop().await;
    env.ns.delete().await;
}
