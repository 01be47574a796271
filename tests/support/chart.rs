//! The operator's identity in the tests is the chart's: the ServiceAccount, ClusterRole and
//! Role that `helm template charts/telemux` renders are applied to the plane, and the operator
//! under test impersonates that ServiceAccount. A rule the chart lacks then fails a test.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use tokio::sync::OnceCell;

/// Release namespace and name the tests install the chart's RBAC as.
pub const RELEASE_NAMESPACE: &str = "telemux-system";
pub const RELEASE: &str = "telemux";
/// The ServiceAccount the chart creates for that release.
pub const SERVICE_ACCOUNT: &str = "telemux";

/// The username the operator under test acts as.
pub fn service_account_user() -> String {
    format!("system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}")
}

fn service_account_groups() -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{RELEASE_NAMESPACE}"),
        "system:authenticated".into(),
    ]
}

/// helm as the Makefile builds it (`HELM_BIN`), for tests marked `no_helm` (see build.rs):
/// they run only when it is given (or under CI), and then its absence fails.
pub fn helm_binary() -> PathBuf {
    let helm = std::env::var_os("HELM_BIN")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    match helm {
        Some(helm) => helm,
        None => panic!(
            "HELM_BIN does not name the helm binary (build it with `make helm`): the operator \
             under test runs with the chart's RBAC, so helm is required"
        ),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `helm template` of the chart as the tests install it.
pub fn render_chart(extra_args: &[&str]) -> String {
    let output = std::process::Command::new(helm_binary())
        .args(["template", RELEASE])
        .arg(repo_root().join("charts/telemux"))
        .args(["--namespace", RELEASE_NAMESPACE, "--kube-version", "1.33.0"])
        .args(extra_args)
        .output()
        .expect("running helm template");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// Applies the chart's ServiceAccount and RBAC to the plane, once per test binary.
pub async fn install_chart_rbac(client: &Client) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": { "name": RELEASE_NAMESPACE }
            }))
            .unwrap();
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("creating namespace {RELEASE_NAMESPACE}: {e}"),
            }
            let rendered = render_chart(&[]);
            let documents: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&rendered).expect("helm renders YAML");
            let mut applied = Vec::new();
            for doc in documents.into_iter().filter(|d| d.is_object()) {
                let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
                if ![
                    "ServiceAccount",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "Role",
                    "RoleBinding",
                ]
                .contains(&kind.as_str())
                {
                    continue;
                }
                let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
                    Some((g, v)) => (g.to_owned(), v.to_owned()),
                    None => (
                        String::new(),
                        doc["apiVersion"].as_str().unwrap().to_owned(),
                    ),
                };
                let resource =
                    ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
                let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
                let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                    None if kind.starts_with("Cluster") => Api::all_with(client.clone(), &resource),
                    None => Api::namespaced_with(client.clone(), RELEASE_NAMESPACE, &resource),
                };
                api.patch(
                    &name,
                    &PatchParams::apply("telemux-tests").force(),
                    &Patch::Apply(doc),
                )
                .await
                .unwrap_or_else(|e| panic!("applying the chart's {kind} {name}: {e}"));
                applied.push(kind);
            }
            for kind in [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ] {
                assert!(
                    applied.iter().any(|k| k == kind),
                    "the chart renders no {kind}"
                );
            }
            // RBAC changes reach the authorizer through its informers: wait until the
            // ServiceAccount may read tenants.
            let client = impersonating_client().await;
            super::eventually(
                "the chart's ClusterRole to take effect",
                Duration::from_secs(30),
                || {
                    let api: Api<telemux::api::TelemetryTenant> = Api::all(client.clone());
                    async move { api.list(&Default::default()).await.ok().map(|_| ()) }
                },
            )
            .await;
        })
        .await;
}

fn plane_kubeconfig_path() -> PathBuf {
    PathBuf::from(std::env::var(super::KUBECONFIG_ENV).expect("the plane's kubeconfig"))
}

/// The plane's kubeconfig, acting as the chart's ServiceAccount.
pub fn impersonating_kubeconfig() -> Kubeconfig {
    let mut kubeconfig =
        Kubeconfig::read_from(plane_kubeconfig_path()).expect("reading the plane's kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(service_account_user());
            auth.impersonate_groups = Some(service_account_groups());
        }
    }
    kubeconfig
}

/// Writes [`impersonating_kubeconfig`] to `path`, for an operator process.
pub fn write_impersonating_kubeconfig(path: &std::path::Path) {
    // JSON is YAML: no second serializer needed.
    let yaml =
        serde_json::to_string_pretty(&impersonating_kubeconfig()).expect("kubeconfig as JSON");
    std::fs::write(path, yaml).expect("writing the kubeconfig");
}

/// A client for the plane acting as the chart's ServiceAccount.
pub async fn impersonating_client() -> Client {
    let config =
        Config::from_custom_kubeconfig(impersonating_kubeconfig(), &KubeConfigOptions::default())
            .await
            .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}
