//! The collector that validates configurations (`make collector`) and the image the operator
//! deploys by default must be the same build, or validation proves nothing about production.

/// The version install-collector.sh stamps into the distribution (builder-config.yaml.in's
/// `dist.version`): `${OTELCOL_VERSION#v}-telemux`.
fn dist_version() -> String {
    let versions = include_str!("../e2e/collector/versions.env");
    let core = versions
        .lines()
        .find_map(|l| l.strip_prefix("OTELCOL_VERSION="))
        .expect("OTELCOL_VERSION in e2e/collector/versions.env")
        .trim();
    format!("{}-telemux", core.trim_start_matches('v'))
}

#[test]
fn the_default_collector_image_is_the_distribution_the_tests_build() {
    assert_eq!(
        telemux::api::collector::DEFAULT_COLLECTOR_IMAGE,
        format!("telemux-otelcol:{}", dist_version())
    );
}

/// The stamp the test above relies on: the builder manifest's `dist.version` and name.
#[test]
fn install_collector_stamps_the_dist_version_the_image_is_tagged_with() {
    let manifest = include_str!("../e2e/collector/builder-config.yaml.in");
    assert!(
        manifest.contains("  name: telemux-otelcol\n")
            && manifest.contains("  version: @OTELCOL_DIST_VERSION@\n"),
        "builder-config.yaml.in's dist section changed:\n{manifest}"
    );
    let script = include_str!("../e2e/collector/install-collector.sh");
    assert!(
        script.contains(r#"s|@OTELCOL_DIST_VERSION@|${OTELCOL_VERSION#v}-telemux|g"#),
        "install-collector.sh no longer stamps ${{OTELCOL_VERSION#v}}-telemux"
    );
}
