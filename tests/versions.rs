//! The collector that validates configurations (`make collector`) and the image the operator
//! deploys by default must be the same release, or validation proves nothing about production.

#[test]
fn the_default_collector_image_is_the_release_the_tests_build() {
    let versions = include_str!("../e2e/collector/versions.env");
    let built = versions
        .lines()
        .find_map(|l| l.strip_prefix("OTELCOL_VERSION="))
        .expect("OTELCOL_VERSION in e2e/collector/versions.env")
        .trim()
        .trim_start_matches('v');
    assert_eq!(
        telemux::api::collector::DEFAULT_COLLECTOR_IMAGE,
        format!("otel/opentelemetry-collector-contrib:{built}")
    );
}
