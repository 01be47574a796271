//! Golden files for the collector renderer: each `tests/golden/<case>.input.yaml` holds a
//! collector and its tenants as the reconciler reads them; the plan and the rendered config are
//! compared byte for byte with `<case>.plan.yaml` and `<case>.config.yaml`.
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites them; review the diff before committing.

use std::path::{Path, PathBuf};

use telemux::pipeline::{CollectorSources, plan_collector, render_collector_config};

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

#[test]
fn tenant_order_does_not_change_the_output() {
    let mut sources = load("many-tenants");
    let forward = render_collector_config(&plan_collector(&sources).unwrap()).unwrap();
    sources.tenants.reverse();
    let backward = render_collector_config(&plan_collector(&sources).unwrap()).unwrap();
    assert_eq!(forward, backward);
}
