//! Tells the Azurite tests whether this build was given Azurite (`AZURITE_BIN`, set by the
//! Makefile), so that without it they are reported as ignored instead of passing without having
//! run. Under CI they always run, and fail without it.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=AZURITE_BIN");
    println!("cargo::rustc-check-cfg=cfg(no_azurite)");
    let given = std::env::var_os("AZURITE_BIN").is_some_and(|v| !v.is_empty());
    if !given && std::env::var_os("CI").is_none() {
        println!("cargo::rustc-cfg=no_azurite");
    }
}
