//! What the collector benchmarks share: the tenants they render a collector for, the binaries
//! they run, and the exporter variants they compare. Pure functions only: no process is started
//! here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use telemux::api::RegionalCollectorSpec;
use telemux::pipeline::{CollectorSources, TenantSource, plan_collector, render_collector_config};

pub fn ikey(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

pub fn tenant_id(i: usize) -> String {
    format!("tenant-{i:05}")
}

/// `tenants` tenants of the default tier, all sharing the credential whose bcrypt hash is
/// `hash`, tenant `i` exporting to `connection_string(&ikey(i))`.
fn sources(
    tenants: usize,
    hash: &str,
    connection_string: &dyn Fn(&str) -> String,
) -> CollectorSources {
    let spec: RegionalCollectorSpec =
        serde_json::from_value(json!({ "region": "westeurope" })).unwrap();
    let tenants = (0..tenants)
        .map(|i| TenantSource {
            name: tenant_id(i),
            created: None,
            labels: Default::default(),
            spec: serde_json::from_value(json!({
                "tenantId": tenant_id(i),
                "regions": ["westeurope"],
                "applicationInsights": { "existing": { "connectionStringSecretRef": { "name": "s", "key": "k" } } }
            }))
            .unwrap(),
            password_hash: Some(hash.to_owned()),
            connection_string: Some(connection_string(&ikey(i))),
        })
        .collect();
    CollectorSources {
        spec,
        platform_password_hash: None,
        platform_connection_string: None,
        blob_connection_string: None,
        tenants,
    }
}

/// The collector configuration telemux rolls out for `tenants` tenants, and its Secret's files.
pub fn render(
    tenants: usize,
    hash: &str,
    connection_string: &dyn Fn(&str) -> String,
) -> (String, BTreeMap<String, Vec<u8>>) {
    let plan = plan_collector(&sources(tenants, hash, connection_string)).expect("a plan");
    let rendered = render_collector_config(&plan).expect("a config");
    let files = plan
        .secret_files
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    (rendered.yaml, files)
}

pub fn binary(var: &str, make_target: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => path,
        _ => {
            eprintln!("{var} must name a binary (make {make_target})");
            std::process::exit(2);
        }
    }
}

const NEW_EXPORTER: &str = "telemux_appinsights";
const OLD_EXPORTER: &str = "azure_monitor";

/// Which exporter the tenants' pipelines end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exporter {
    /// `telemux_appinsights` with its persistent queue: the configuration as rendered.
    Persistent,
    /// `azure_monitor` plus a `batch` processor, as telemux rendered it before
    /// `telemux_appinsights`.
    AzureMonitor,
    /// `telemux_appinsights` with an in-memory queue (`sending_queue::storage` removed).
    InMemory,
}

impl Exporter {
    pub const ALL: [Exporter; 3] = [
        Exporter::Persistent,
        Exporter::AzureMonitor,
        Exporter::InMemory,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Exporter::Persistent => "telemux_appinsights, persistent queue",
            Exporter::AzureMonitor => "azure_monitor + batch",
            Exporter::InMemory => "telemux_appinsights, in-memory queue",
        }
    }

    /// `rendered` (the configuration as telemux renders it) turned into this variant.
    pub fn config(self, rendered: &str) -> String {
        if self == Exporter::Persistent {
            return rendered.to_owned();
        }
        let mut config: Value = serde_saphyr::from_str(rendered).expect("the rendered YAML");
        match self {
            Exporter::Persistent => unreachable!(),
            Exporter::AzureMonitor => to_azure_monitor(&mut config),
            Exporter::InMemory => to_in_memory_queue(&mut config),
        }
        drop_unused_storage(&mut config);
        let yaml = serde_saphyr::to_string(&config).expect("YAML");
        if self == Exporter::AzureMonitor {
            assert!(
                !yaml.contains(NEW_EXPORTER) && !yaml.contains("file_storage"),
                "the azure_monitor variant still mentions telemux_appinsights or its storage"
            );
        }
        yaml
    }
}

fn object<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    value
        .get_mut(key)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("the config has a `{key}` map"))
}

/// Every `telemux_appinsights/<x>` exporter becomes `azure_monitor/<x>` configured as telemux
/// rendered it before (same connection string file, span events, a 5,000-batch queue), every
/// reference to it in the pipelines is renamed, and each pipeline exporting to one gets the
/// `batch` processor appended (`batch: {}`), as before.
fn to_azure_monitor(config: &mut Value) {
    let exporters = object(config, "exporters");
    let mut renamed = BTreeMap::new();
    for (name, exporter) in std::mem::take(exporters) {
        let Some(suffix) = name.strip_prefix(&format!("{NEW_EXPORTER}/")) else {
            exporters.insert(name, exporter);
            continue;
        };
        let old = format!("{OLD_EXPORTER}/{suffix}");
        exporters.insert(
            old.clone(),
            json!({
                "connection_string": exporter["connection_string"].clone(),
                "spaneventsenabled": true,
                "sending_queue": { "enabled": true, "queue_size": 5000 },
            }),
        );
        renamed.insert(name, old);
    }
    assert!(!renamed.is_empty(), "no {NEW_EXPORTER} exporter to replace");
    object(config, "processors").insert("batch".into(), json!({}));
    let service = config.get_mut("service").expect("a service section");
    for pipeline in object(service, "pipelines").values_mut() {
        let mut batched = false;
        if let Some(list) = pipeline.get_mut("exporters").and_then(Value::as_array_mut) {
            for exporter in list.iter_mut() {
                if let Some(old) = exporter.as_str().and_then(|e| renamed.get(e)) {
                    *exporter = Value::String(old.clone());
                    batched = true;
                }
            }
        }
        if batched {
            let processors = pipeline
                .as_object_mut()
                .expect("a pipeline is a map")
                .entry("processors")
                .or_insert_with(|| json!([]));
            processors
                .as_array_mut()
                .expect("processors is a list")
                .push("batch".into());
        }
    }
}

/// Every `telemux_appinsights` exporter keeps its queue in memory.
fn to_in_memory_queue(config: &mut Value) {
    let mut changed = 0;
    for (name, exporter) in object(config, "exporters").iter_mut() {
        if name.starts_with(&format!("{NEW_EXPORTER}/"))
            && let Some(queue) = exporter
                .get_mut("sending_queue")
                .and_then(Value::as_object_mut)
            && queue.remove("storage").is_some()
        {
            changed += 1;
        }
    }
    assert!(changed > 0, "no persistent queue to take out");
}

/// Storage extensions no exporter uses any more leave the config (the old render had none).
fn drop_unused_storage(config: &mut Value) {
    let used: Vec<String> = object(config, "exporters")
        .values()
        .filter_map(|e| {
            e.pointer("/sending_queue/storage")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let unused: Vec<String> = object(config, "extensions")
        .keys()
        .filter(|k| k.starts_with("file_storage") && !used.contains(k))
        .cloned()
        .collect();
    for name in &unused {
        object(config, "extensions").remove(name);
    }
    let service = config.get_mut("service").expect("a service section");
    if let Some(list) = service.get_mut("extensions").and_then(Value::as_array_mut) {
        list.retain(|e| e.as_str().is_none_or(|e| !unused.iter().any(|u| u == e)));
    }
}
