//! The Helm chart (charts/telemux) as a platform engineer uses it: it lints clean, its schema
//! refuses wrong values before anything is installed, what it renders is accepted by a real
//! API server, and `helm install` into a namespace enforcing the restricted Pod Security
//! Standard runs the operator's pods with exactly the RBAC it documents; `helm uninstall`
//! removes all of it except the CRDs.
//!
//! helm is named by `HELM_BIN` (`make helm`), the plane by `TELEMUX_TEST_KUBECONFIG`. Without
//! either variable the tests that need it are reported as ignored (see build.rs); under `CI`,
//! or with a variable that names nothing, they fail. Every install gets a release name of its
//! own: the ClusterRole and ClusterRoleBinding are cluster-scoped.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{KUBECONFIG_ENV, TestNamespace, eventually, plane_client};

const CRDS: [&str; 2] = [
    "telemetrytenants.telemux.io",
    "regionalcollectors.telemux.io",
];

// ---------------------------------------------------------------------------------------
// Helpers: helm and kubectl as processes, pinned to a throwaway helm home and to the plane.
// ---------------------------------------------------------------------------------------

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/telemux")
}

/// Runs helm (and kubectl) with its own config/cache/data directories and a kubeconfig that is
/// the plane's or, for offline commands, one that does not exist: never the user's context.
struct Helm {
    binary: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<String>,
}

impl Helm {
    /// helm for offline commands (lint, template).
    fn offline() -> Self {
        Helm {
            binary: support::chart::helm_binary(),
            home: tempfile::tempdir().expect("a temporary helm home"),
            kubeconfig: None,
        }
    }

    /// helm and a client for the plane.
    async fn with_plane() -> (Self, Client) {
        let binary = support::chart::helm_binary();
        let client = plane_client().await;
        let kubeconfig = std::env::var(KUBECONFIG_ENV).expect("plane_client checked it");
        (
            Helm {
                binary,
                home: tempfile::tempdir().expect("a temporary helm home"),
                kubeconfig: Some(kubeconfig),
            },
            client,
        )
    }

    fn kubeconfig(&self) -> String {
        self.kubeconfig.clone().unwrap_or_else(|| {
            self.home
                .path()
                .join("no-cluster-kubeconfig")
                .display()
                .to_string()
        })
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        let home = self.home.path();
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null());
        command
    }

    fn helm(&self, args: &[&str]) -> Output {
        let mut command = self.command(&self.binary);
        command.args(args);
        if self.kubeconfig.is_some() {
            command.args(["--kubeconfig", &self.kubeconfig()]);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.binary.display()))
    }

    /// helm that must succeed; returns its stdout.
    fn helm_ok(&self, args: &[&str]) -> String {
        let output = self.helm(args);
        assert!(
            output.status.success(),
            "helm {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("helm writes UTF-8")
    }

    /// `kubectl <args>` against the plane with `input` on stdin.
    fn kubectl(&self, args: &[&str], input: &str) -> Output {
        let kubeconfig = self.kubeconfig.clone().expect("kubectl needs the plane");
        let mut child = self
            .command(Path::new("kubectl"))
            .args(["--kubeconfig", &kubeconfig])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl (it is on the machine's PATH)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("writing to kubectl");
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// `helm template` of the chart with extra arguments (values files, --set ...).
    fn template(&self, release: &str, namespace: &str, extra: &[&str]) -> String {
        let chart = chart_dir().display().to_string();
        let mut args = vec!["template", release, &chart, "--namespace", namespace];
        args.extend_from_slice(extra);
        self.helm_ok(&args)
    }

    /// A values file with `yaml` in the helm home.
    fn values_file(&self, name: &str, yaml: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, yaml).expect("writing a values file");
        path.display().to_string()
    }
}

/// A name no other test (or earlier run) uses, for releases and their cluster-scoped objects.
fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    let mut n = hasher.finish();
    let suffix: String = (0..6)
        .map(|_| {
            let c = char::from(b'a' + (n % 26) as u8);
            n /= 26;
            c
        })
        .collect();
    format!("{prefix}-{suffix}")
}

/// The documents of a multi-document YAML stream (helm's output).
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("helm rendered invalid YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The manifests the NOTES print as `echo '<yaml>' | kubectl apply -f -`, as a shell would
/// pass them to kubectl.
fn notes_manifests(notes: &str) -> Vec<String> {
    let mut manifests = Vec::new();
    let mut rest = notes;
    while let Some(start) = rest.find("echo '") {
        let after = &rest[start + "echo '".len()..];
        let end = after
            .find("' | kubectl apply -f -")
            .expect("every echo in the NOTES is piped into kubectl apply");
        manifests.push(format!("{}\n", &after[..end]));
        rest = &after[end..];
    }
    manifests
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let matching: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(matching.len(), 1, "expected exactly one {kind}");
    matching[0]
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The ClusterRole rules the README documents: exactly what the controllers call.
fn expected_cluster_rules() -> Vec<PolicyRule> {
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    vec![
        rule(
            "telemux.io",
            &["telemetrytenants", "regionalcollectors"],
            &["list", "watch", "patch"],
        ),
        rule(
            "telemux.io",
            &["telemetrytenants/status", "regionalcollectors/status"],
            &["patch"],
        ),
        rule(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            "",
            &["configmaps", "services"],
            &["list", "watch", "patch", "create", "delete"],
        ),
        rule(
            "apps",
            &["statefulsets"],
            &["list", "watch", "patch", "create", "delete"],
        ),
        rule(
            "policy",
            &["poddisruptionbudgets"],
            &["list", "watch", "patch", "create", "delete"],
        ),
        rule(
            "autoscaling",
            &["horizontalpodautoscalers"],
            &["list", "patch", "create", "delete"],
        ),
        // Where the leader reads the collector pods' counters (status.delivery).
        rule("discovery.k8s.io", &["endpointslices"], &["list"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

fn expected_leader_election_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        verbs: vec!["get".into(), "create".into(), "patch".into()],
        ..Default::default()
    }]
}

/// A fresh namespace whose Pod Security admission enforces (and warns about) `restricted`.
async fn restricted_namespace(client: &Client, test: &str) -> TestNamespace {
    let ns = TestNamespace::create(client, test).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/warn-version": "latest",
            }}})),
        )
        .await
        .expect("labelling the namespace for restricted Pod Security");
    ns
}

/// Uninstalls the release and deletes its namespace if the test ends early (a failed
/// assertion), so no cluster-scoped ClusterRole is left behind.
struct ReleaseGuard<'a> {
    helm: &'a Helm,
    release: String,
    namespace: String,
    armed: bool,
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.helm.helm(&[
                "uninstall",
                &self.release,
                "--namespace",
                &self.namespace,
                "--ignore-not-found",
            ]);
            let _ = self.helm.kubectl(
                &["delete", "namespace", &self.namespace, "--wait=false"],
                "",
            );
        }
    }
}

const SCHEMA_ERROR: &str = "values don't meet the specifications of the schema";

/// Values a user could plausibly write, each wrong in one way the schema must catch, with
/// the location helm's error has to name.
const BAD_VALUES: &[(&str, &str, &str)] = &[
    ("negative-replicas", "replicaCount: -1\n", "/replicaCount"),
    (
        "replicas-as-text",
        "replicaCount: \"two\"\n",
        "/replicaCount",
    ),
    (
        "delivery-interval-zero",
        "delivery:\n  intervalSeconds: 0\n",
        "/delivery/intervalSeconds",
    ),
    (
        "unknown-top-level-key",
        "replicas: 2\n",
        "'replicas' not allowed",
    ),
    (
        "unknown-nested-key",
        "image:\n  name: telemux\n",
        "'name' not allowed",
    ),
    (
        "credential-outside-enum",
        "azure:\n  credential: password\n",
        "/azure/credential",
    ),
    (
        "client-secret-without-secret",
        "azure:\n  credential: client-secret\n  tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\n  clientId: 0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0\n",
        "/azure/clientSecret/secretName",
    ),
    (
        "client-secret-without-tenant",
        "azure:\n  credential: client-secret\n  clientId: 0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0\n  clientSecret:\n    secretName: telemux-azure\n",
        "/azure/tenantId",
    ),
    (
        "boolean-as-text",
        "leaderElection:\n  enabled: \"yes\"\n",
        "/leaderElection/enabled",
    ),
    (
        "service-monitor-interval-as-number",
        "metrics:\n  serviceMonitor:\n    enabled: true\n    interval: 30\n",
        "/metrics/serviceMonitor/interval",
    ),
    (
        "watch-namespace-not-a-name",
        "watchNamespace: Tenants_EU\n",
        "/watchNamespace",
    ),
    (
        "cpu-not-a-quantity",
        "resources:\n  requests:\n    cpu: lots\n",
        "/resources/requests/cpu",
    ),
    (
        "existing-service-account-without-name",
        "serviceAccount:\n  create: false\n",
        "/serviceAccount/name",
    ),
    (
        "collector-repository-with-a-tag",
        "collector:\n  image:\n    repository: otel/opentelemetry-collector-contrib:0.161.0\n",
        "/collector/image/repository",
    ),
];

fn assert_schema_refusal(output: &Output, case: &str, location: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{case}: helm accepted values the schema must refuse"
    );
    assert!(
        stderr.contains(SCHEMA_ERROR) && stderr.contains(location),
        "{case}: expected a schema error naming {location}, got:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Offline: lint, schema, what is rendered.
// ---------------------------------------------------------------------------------------

#[test]
#[cfg_attr(no_helm, ignore = "needs helm: HELM_BIN (make helm)")]
fn chart_lints_strictly_clean_with_defaults_and_with_every_option() {
    let helm = Helm::offline();
    let chart = chart_dir().display().to_string();
    let ci = chart_dir().join("ci");
    let mut values_files: Vec<String> = std::fs::read_dir(&ci)
        .expect("charts/telemux/ci holds the test values")
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with("-values.yaml"))
        .collect();
    values_files.sort();
    assert!(
        values_files
            .iter()
            .any(|f| f.ends_with("servicemonitor-client-secret-values.yaml")),
        "the ServiceMonitor + client-secret values are linted"
    );
    let mut runs: Vec<Vec<&str>> = vec![vec!["lint", "--strict", &chart]];
    for file in &values_files {
        runs.push(vec!["lint", "--strict", &chart, "--values", file]);
    }
    for args in runs {
        let out = helm.helm_ok(&args);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm {}:\n{out}",
            args.join(" ")
        );
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm {}:\n{out}",
            args.join(" ")
        );
    }
}

#[test]
#[cfg_attr(no_helm, ignore = "needs helm: HELM_BIN (make helm)")]
fn schema_refuses_wrong_values_before_rendering() {
    let helm = Helm::offline();
    let chart = chart_dir().display().to_string();
    // Control: the same command with valid values renders, so a refusal below is the schema's.
    helm.template("control", "telemux-system", &[]);
    for (case, yaml, location) in BAD_VALUES {
        let file = helm.values_file(&format!("{case}.yaml"), yaml);
        let output = helm.helm(&["template", "bad", &chart, "--values", &file]);
        assert_schema_refusal(&output, case, location);
    }
    // The same refusal through --set, the other way values arrive.
    let output = helm.helm(&["template", "bad", &chart, "--set", "azure.credential=sp"]);
    assert_schema_refusal(&output, "--set azure.credential=sp", "/azure/credential");
}

#[test]
#[cfg_attr(no_helm, ignore = "needs helm: HELM_BIN (make helm)")]
fn default_render_runs_the_operator_least_privileged_and_restricted() {
    let helm = Helm::offline();
    let docs = documents(&helm.template("rel", "telemux-system", &[]));

    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = args_of(deployment);
    for expected in [
        "run",
        "--log-format=json",
        "--metrics-bind-address=0.0.0.0:8080",
        "--collector-binary=/usr/local/bin/otelcol-telemux",
        "--collector-image=telemux-otelcol:0.161.0-telemux",
        "--leader-elect",
        "--leader-election-namespace=$(POD_NAMESPACE)",
        "--azure-credential=auto",
        "--collector-debounce-ms=2000",
        "--delivery-interval=30",
        "--delivery-grace=300",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "missing {expected} in {args:?}"
        );
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "serves every namespace by default"
    );
    assert!(
        !args.iter().any(|a| a == "--tenant-delivery-metrics"),
        "no per-tenant series by default"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "telemux:0.1.0",
        "tag defaults to appVersion"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/tmp"),
        "a writable /tmp for the collector configs the operator validates"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "RUST_LOG"]);

    let rules: Vec<PolicyRule> =
        serde_json::from_value(find(&docs, "ClusterRole")["rules"].clone()).unwrap();
    assert_eq!(rules, expected_cluster_rules());
    let rules: Vec<PolicyRule> =
        serde_json::from_value(find(&docs, "Role")["rules"].clone()).unwrap();
    assert_eq!(rules, expected_leader_election_rules());
    assert!(
        !docs.iter().any(|d| d["kind"] == "ServiceMonitor"),
        "no ServiceMonitor unless asked for"
    );
    let service = find(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
}

/// The `--collector-image` flag the chart passes to the operator.
fn collector_image_arg(docs: &[Value]) -> String {
    let args = args_of(find(docs, "Deployment"));
    let images: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--collector-image="))
        .collect();
    assert_eq!(images.len(), 1, "one --collector-image in {args:?}");
    images[0].clone()
}

#[test]
#[cfg_attr(no_helm, ignore = "needs helm: HELM_BIN (make helm)")]
fn collectors_default_to_the_telemux_distribution_image_or_the_one_set() {
    let helm = Helm::offline();
    // By default: the distribution the operator validates with, the operator's own default.
    let docs = documents(&helm.template("rel", "telemux-system", &[]));
    assert_eq!(
        collector_image_arg(&docs),
        "--collector-image=telemux-otelcol:0.161.0-telemux"
    );
    assert_eq!(
        collector_image_arg(&docs),
        format!(
            "--collector-image={}",
            telemux::api::collector::DEFAULT_COLLECTOR_IMAGE
        ),
        "the chart and the operator default to the same collector image"
    );

    // A registry of one's own keeps the default tag; a tag set is passed through.
    let docs = documents(&helm.template(
        "rel",
        "telemux-system",
        &[
            "--set",
            "collector.image.repository=registry.example:5000/platform/telemux-otelcol",
        ],
    ));
    assert_eq!(
        collector_image_arg(&docs),
        "--collector-image=registry.example:5000/platform/telemux-otelcol:0.161.0-telemux"
    );
    let docs = documents(&helm.template(
        "rel",
        "telemux-system",
        &[
            "--set",
            "collector.image.repository=registry.example/telemux-otelcol",
            "--set",
            "collector.image.tag=0.161.0-telemux.2",
        ],
    ));
    assert_eq!(
        collector_image_arg(&docs),
        "--collector-image=registry.example/telemux-otelcol:0.161.0-telemux.2"
    );
}

#[test]
#[cfg_attr(no_helm, ignore = "needs helm: HELM_BIN (make helm)")]
fn azure_identities_reach_the_pod() {
    let helm = Helm::offline();
    let ci = chart_dir().join("ci");

    // Workload identity: the webhook needs the ServiceAccount annotation and the pod label.
    let file = ci
        .join("workload-identity-values.yaml")
        .display()
        .to_string();
    let docs = documents(&helm.template("wi", "telemux-system", &["--values", &file]));
    let annotations = &find(&docs, "ServiceAccount")["metadata"]["annotations"];
    assert_eq!(
        annotations["azure.workload.identity/client-id"],
        "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0"
    );
    assert_eq!(
        annotations["azure.workload.identity/tenant-id"],
        "72f988bf-86f1-41af-91ab-2d7cd011db47"
    );
    let deployment = find(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert!(args_of(deployment).contains(&"--azure-credential=workload-identity".to_owned()));

    // Client secret: mounted read-only as a file, and the flags the operator insists on.
    let file = ci
        .join("servicemonitor-client-secret-values.yaml")
        .display()
        .to_string();
    let docs = documents(&helm.template("cs", "telemux-system", &["--values", &file]));
    let deployment = find(&docs, "Deployment");
    let args = args_of(deployment);
    for expected in [
        "--azure-credential=client-secret",
        "--azure-tenant-id=72f988bf-86f1-41af-91ab-2d7cd011db47",
        "--azure-client-id=0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0",
        "--azure-client-secret-file=/var/run/secrets/telemux/azure/secret",
        "--namespace=tenants",
        "--otlp-endpoint=http://otel-collector.observability:4318",
        "--collector-image=example.invalid/telemux-otelcol:0.161.0-telemux-test",
        "--delivery-interval=10",
        "--delivery-grace=60",
        "--tenant-delivery-metrics",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "missing {expected} in {args:?}"
        );
    }
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "azure-client-secret")
        .expect("the client secret volume");
    assert_eq!(volume["secret"]["secretName"], "telemux-azure");
    assert_eq!(
        volume["secret"]["items"],
        json!([{ "key": "secret", "path": "secret" }])
    );
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "azure-client-secret")
        .expect("the client secret mount");
    assert_eq!(mount["mountPath"], "/var/run/secrets/telemux/azure");
    assert_eq!(mount["readOnly"], true);
    let monitor = find(&docs, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
}

// ---------------------------------------------------------------------------------------
// Against the plane.
// ---------------------------------------------------------------------------------------

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn rendered_manifests_pass_server_side_dry_run_in_a_restricted_namespace() {
    let (helm, client) = Helm::with_plane().await;
    let ns = restricted_namespace(&client, "chart-dry-run").await;
    let everything = chart_dir()
        .join("ci/servicemonitor-client-secret-values.yaml")
        .display()
        .to_string();
    let renders = [
        ("defaults", vec!["--include-crds"]),
        // The plane has no Prometheus Operator, hence no ServiceMonitor CRD.
        (
            "every option but the ServiceMonitor",
            vec![
                "--values",
                &everything,
                "--set",
                "metrics.serviceMonitor.enabled=false",
            ],
        ),
    ];
    for (what, extra) in renders {
        let release = unique("dry");
        let manifests = helm.template(&release, &ns.name, &extra);
        let output = helm.kubectl(
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "--namespace",
                &ns.name,
                "-f",
                "-",
            ],
            &manifests,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{what}: the API server refused the rendered chart:\n{stderr}"
        );
        assert!(
            !stderr.contains("PodSecurity"),
            "{what}: the Deployment would violate the restricted Pod Security Standard:\n{stderr}"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        for object in [
            "serviceaccount",
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "role.rbac.authorization.k8s.io",
            "rolebinding.rbac.authorization.k8s.io",
            "service",
            "deployment.apps",
        ] {
            assert!(
                stdout.contains(&format!("{object}/")),
                "{what}: {object} was not part of the dry run:\n{stdout}"
            );
        }
    }
    ns.delete().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn install_into_a_restricted_namespace_runs_the_operator_and_uninstall_cleans_up() {
    let (helm, client) = Helm::with_plane().await;
    let ns = restricted_namespace(&client, "chart-install").await;
    let release = unique("tmx");
    let fullname = format!("{release}-telemux");
    let mut guard = ReleaseGuard {
        helm: &helm,
        release: release.clone(),
        namespace: ns.name.clone(),
        armed: true,
    };

    // Control: the namespace really enforces restricted, so the operator's admission below
    // means something.
    let careless: Pod = serde_json::from_value(json!({
        "metadata": { "name": "careless" },
        "spec": { "containers": [{ "name": "c", "image": "registry.k8s.io/pause:3.10" }] }
    }))
    .unwrap();
    let refused = ns
        .api::<Pod>()
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &careless,
        )
        .await
        .expect_err("restricted Pod Security refuses a pod without a security context");
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "unexpected refusal: {refused}"
    );

    let chart = chart_dir().display().to_string();
    let notes = helm.helm_ok(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &ns.name,
        "--timeout",
        "2m",
        // The NOTES' examples then name this namespace (the pods never run the operator).
        "--set",
        &format!("watchNamespace={}", ns.name),
    ]);
    assert!(
        notes.contains("kubectl get telemux -A"),
        "the NOTES tell the user how to see their resources:\n{notes}"
    );

    // CRDs: installed by this release or already there (helm skips existing ones); served.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let crds = crds.clone();
                async move {
                    let crd = crds.get(name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }

    // What the NOTES tell the user to apply next is accepted by the API server as printed.
    let examples = notes_manifests(&notes);
    let kinds: Vec<&str> = examples
        .iter()
        .map(|m| {
            if m.contains("kind: RegionalCollector") {
                "RegionalCollector"
            } else {
                "TelemetryTenant"
            }
        })
        .collect();
    assert_eq!(kinds, ["RegionalCollector", "TelemetryTenant"], "{notes}");
    for manifest in &examples {
        let output = helm.kubectl(&["apply", "--dry-run=server", "-f", "-"], manifest);
        assert!(
            output.status.success(),
            "the NOTES' example is refused:\n{manifest}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = helm.kubectl(&["get", "telemux", "-A"], "");
    assert!(
        output.status.success(),
        "kubectl get telemux -A: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let service_account = ns
        .api::<ServiceAccount>()
        .get(&fullname)
        .await
        .expect("the ServiceAccount");
    assert_eq!(
        service_account.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
        release
    );
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get(&fullname)
        .await
        .expect("the ClusterRole");
    assert_eq!(cluster_role.rules.unwrap(), expected_cluster_rules());
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&fullname)
        .await
        .expect("the ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, fullname);
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", fullname.as_str(), Some(ns.name.as_str()))
    );
    let role = ns.api::<Role>().get(&fullname).await.expect("the Role");
    assert_eq!(role.rules.unwrap(), expected_leader_election_rules());
    let role_binding = ns
        .api::<RoleBinding>()
        .get(&fullname)
        .await
        .expect("the RoleBinding");
    assert_eq!(role_binding.role_ref.name, fullname);
    let service = ns
        .api::<Service>()
        .get(&format!("{fullname}-metrics"))
        .await
        .expect("the metrics Service");
    let port = &service.spec.unwrap().ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("metrics"), 8080));

    // The ReplicaSet's pods are admitted by restricted Pod Security and run on kwok's nodes.
    let deployments = ns.api::<Deployment>();
    let pods = ns.api::<Pod>();
    let selector = format!("app.kubernetes.io/instance={release}");
    eventually(
        "the operator Deployment to become Available with 2 running pods",
        Duration::from_secs(90),
        || {
            let (deployments, pods) = (deployments.clone(), pods.clone());
            let (fullname, selector) = (fullname.clone(), selector.clone());
            async move {
                let status = deployments.get(&fullname).await.ok()?.status?;
                let available = status
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                let running = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count();
                (available && status.available_replicas == Some(2) && running == 2).then_some(())
            }
        },
    )
    .await;

    helm.helm_ok(&["uninstall", &release, "--namespace", &ns.name]);
    guard.armed = false;
    eventually(
        "helm uninstall to remove every object of the release",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let (ns, fullname) = (ns.name.clone(), fullname.clone());
            async move {
                let gone = [
                    Api::<ClusterRole>::all(client.clone())
                        .get_opt(&fullname)
                        .await
                        .ok()?
                        .is_none(),
                    Api::<ClusterRoleBinding>::all(client.clone())
                        .get_opt(&fullname)
                        .await
                        .ok()?
                        .is_none(),
                    Api::<Role>::namespaced(client.clone(), &ns)
                        .get_opt(&fullname)
                        .await
                        .ok()?
                        .is_none(),
                    Api::<RoleBinding>::namespaced(client.clone(), &ns)
                        .get_opt(&fullname)
                        .await
                        .ok()?
                        .is_none(),
                    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                        .get_opt(&fullname)
                        .await
                        .ok()?
                        .is_none(),
                    Api::<Service>::namespaced(client.clone(), &ns)
                        .get_opt(&format!("{fullname}-metrics"))
                        .await
                        .ok()?
                        .is_none(),
                    Api::<Deployment>::namespaced(client.clone(), &ns)
                        .get_opt(&fullname)
                        .await
                        .ok()?
                        .is_none(),
                ];
                gone.iter().all(|g| *g).then_some(())
            }
        },
    )
    .await;
    // Uninstall keeps the CRDs (and with them every tenant's and collector's objects).
    for name in CRDS {
        assert!(
            crds.get_opt(name).await.unwrap().is_some(),
            "helm uninstall deleted CRD {name}"
        );
    }
    drop(guard);
    ns.delete().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn install_refuses_values_violating_the_schema_and_creates_nothing() {
    let (helm, client) = Helm::with_plane().await;
    let ns = TestNamespace::create(&client, "chart-schema").await;
    let chart = chart_dir().display().to_string();
    for (case, yaml, location) in BAD_VALUES {
        let release = unique("bad");
        let file = helm.values_file(&format!("{case}.yaml"), yaml);
        let output = helm.helm(&[
            "install",
            &release,
            &chart,
            "--namespace",
            &ns.name,
            "--values",
            &file,
        ]);
        assert_schema_refusal(&output, case, location);
        let cluster_role = Api::<ClusterRole>::all(client.clone())
            .get_opt(&format!("{release}-telemux"))
            .await
            .unwrap();
        assert!(
            cluster_role.is_none(),
            "{case}: a refused install still created its ClusterRole"
        );
    }
    let releases = helm.helm_ok(&["list", "--all", "--namespace", &ns.name, "--short"]);
    assert!(
        releases.trim().is_empty(),
        "refused installs left releases behind: {releases}"
    );
    ns.delete().await;
}
