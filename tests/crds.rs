//! crds/ is generated from the Rust types (`make crds`); this fails when it is stale.

use std::path::Path;

#[test]
fn crds_directory_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let files = telemux::api::crd_files().expect("CRDs serialize");
    let mut expected_names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    for (name, yaml) in files {
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name}: {e}; run `make crds`"));
        assert!(
            on_disk == yaml,
            "crds/{name} is stale; run `make crds` and commit the result"
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    present.sort();
    expected_names.sort();
    assert_eq!(
        present, expected_names,
        "crds/ holds files no type generates; run `make crds`"
    );
}
