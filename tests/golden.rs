//! Golden files for the collector renderer: each `tests/golden/<case>.input.yaml` holds a
//! collector and its tenants as the reconciler reads them; the plan and the rendered config are
//! compared byte for byte with `<case>.plan.yaml` and `<case>.config.yaml`.
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites them; review the diff before committing.
//! The real collector checks every committed `<case>.config.yaml` (`make collector-validate-golden`).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use telemux::pipeline::{CollectorSources, plan_collector, render_collector_config};
use telemux::validator::{CollectorBinary, ConfigValidator, Verdict};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(case: &str) -> CollectorSources {
    let path = golden_dir().join(format!("{case}.input.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(case: &str, suffix: &str, actual: &str) {
    let path = golden_dir().join(format!("{case}.{suffix}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the rendered output:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// A readable summary of the plan: who is routed, excluded, rejected, and which Secret files
/// exist (their content is secret-bearing and pinned by the input).
fn plan_summary(sources: &CollectorSources) -> String {
    let plan = plan_collector(sources).expect("plan");
    let summary = serde_json::json!({
        "routed": plan.routed.iter().map(|t| &t.tenant_id).collect::<Vec<_>>(),
        "excluded": plan.excluded,
        "rejected": plan.rejected,
        "secretFiles": plan.secret_files.keys().collect::<Vec<_>>(),
        "htpasswdUsers": plan.secret_files["htpasswd"].lines()
            .map(|l| l.split(':').next().unwrap_or_default()).collect::<Vec<_>>(),
    });
    serde_saphyr::to_string(&summary).unwrap()
}

fn golden(case: &str) {
    let sources = load(case);
    let plan = plan_collector(&sources).expect("plan");
    let rendered = render_collector_config(&plan).expect("render");
    // Same input, same bytes: render again from a fresh plan.
    let again = render_collector_config(&plan_collector(&sources).unwrap()).unwrap();
    assert_eq!(rendered, again, "rendering is not deterministic");
    for file in plan.secret_files.values() {
        assert!(
            !rendered.yaml.contains(file.trim()) || file.trim().is_empty(),
            "secret material leaked into the config"
        );
    }
    check(case, "config.yaml", &rendered.yaml);
    check(case, "plan.yaml", &plan_summary(&sources));
}

#[test]
fn one_tenant() {
    golden("one-tenant");
}

#[test]
fn many_tenants() {
    golden("many-tenants");
}

#[test]
fn tenant_redaction_additions() {
    golden("tenant-redaction");
}

#[test]
fn residency_exclusion() {
    golden("residency-exclusion");
}

#[test]
fn suspended_tenant() {
    golden("suspended-tenant");
}

#[test]
fn invalid_tenant_is_isolated() {
    golden("invalid-tenant");
}

#[test]
fn platform_credential() {
    golden("platform");
}

#[test]
fn blob_storage_on() {
    golden("blob-storage");
}

#[test]
fn no_tenants_yet() {
    golden("no-tenants");
}

/// A suspended and a region-excluded tenant (each dropped through its own filter into nop,
/// even with a platform sink taking unknown tenants and the regional copy on), next to a tenant
/// that asked for a delivery report and one that did not, whose disabled logs are dropped the
/// same way (`filter/signal_disabled_globex`) rather than left to the platform's sink.
#[test]
fn exclusions_and_delivery_report() {
    golden("exclusions-and-delivery-report");
}

#[test]
fn tenant_order_does_not_change_the_output() {
    let mut sources = load("many-tenants");
    let forward = render_collector_config(&plan_collector(&sources).unwrap()).unwrap();
    sources.tenants.reverse();
    let backward = render_collector_config(&plan_collector(&sources).unwrap()).unwrap();
    assert_eq!(forward, backward);
}

/// Every committed `<case>.config.yaml` passes the real collector's `validate`, as the operator
/// checks a configuration before it rolls it out: mount paths moved into a temporary directory,
/// placeholders for the Secret files it reads. The files themselves are checked, so a golden
/// file the collector would refuse cannot be committed (the tests above only compare it with
/// the renderer's output).
#[tokio::test]
#[cfg_attr(
    no_collector,
    ignore = "needs the collector: OTELCOL_BIN (make collector)"
)]
async fn committed_configs_pass_the_collectors_validate() {
    let collector = CollectorBinary {
        path: support::require_collector_binary(),
        // Generous: the machines these run on are shared; the operator allows 30 s.
        timeout: Duration::from_secs(120),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".config.yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.config.yaml in {}",
        golden_dir().display()
    );
    let mut failed = Vec::new();
    for path in &files {
        let config = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        match collector.validate_pod_config(&config).await {
            Verdict::Valid => {}
            Verdict::Rejected(message) => failed.push(format!("{name}: {message}")),
            Verdict::Unchecked(message) => failed.push(format!("{name}: not checked: {message}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} golden configs fail `{}`:\n{}",
        failed.len(),
        files.len(),
        collector.describe(),
        failed.join("\n")
    );
}
