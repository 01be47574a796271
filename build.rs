//! Tells the tests which local components this build was not given, so that a test needing one
//! is reported as ignored instead of passing without having run. A component counts as given
//! when its variable is set (the Makefile sets them all); a test then fails if it is not there.
//! Under CI nothing is ever left out: the tests run and fail without their components.

/// Each component's variable and the cfg set when it is not given.
const COMPONENTS: [(&str, &str); 4] = [
    ("TELEMUX_TEST_KUBECONFIG", "no_plane"),
    ("OTELCOL_BIN", "no_collector"),
    ("AZURITE_BIN", "no_azurite"),
    ("HELM_BIN", "no_helm"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var_os("CI").is_some();
    for (var, cfg) in COMPONENTS {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        let given = std::env::var_os(var).is_some_and(|v| !v.is_empty());
        if !given && !ci {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
