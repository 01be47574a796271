fn main() {
    for crd in telemux::api::all_crds() {
        println!("---\n{}", serde_saphyr::to_string(&crd).unwrap());
    }
}
