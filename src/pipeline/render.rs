//! Renders a collector plan into OpenTelemetry Collector YAML.
//!
//! One span's way (see DESIGN.md): OTLP receiver authenticated per tenant → memory_limiter →
//! `telemux.principal` from the authenticated user → `tenant.id` set from it (only the platform
//! may keep its own) → excluded tenants dropped → baseline redaction → routing by `tenant.id` →
//! one pipeline per tenant and signal (tier stamp, tenant redaction, sampling) → the tenant's
//! `telemux_appinsights` exporter, whose persistent queue batches, retries and survives
//! restarts (+ the regional Blob copy).
//!
//! No `batch` processor: it would acknowledge data before any queue holds it, so a full queue
//! could not refuse the client and a restart would lose what it held. Batching happens in each
//! exporter's sending queue, after the data is on the queue volume.

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::delivery::{
    MEMORY_LIMIT_PERCENTAGE, MEMORY_SPIKE_PERCENTAGE, QUEUE_CONSUMERS, QueueBudget,
    collector_queue_budget,
};
use super::plan::{CollectorPlan, RoutedTenant};
use super::{
    BLOB_CONNECTION_STRING_FILE, HEALTH_PORT, HTPASSWD_FILE, METRICS_PORT,
    PLATFORM_CONNECTION_STRING_FILE, PLATFORM_USER, QUEUE_DIR, SECRETS_DIR,
    tenant_connection_string_file,
};
use crate::api::collector::UnknownTenantPolicy;
use crate::api::tenant::Tier;

/// Rendered collector configuration and its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig {
    pub yaml: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not serialize the collector configuration: {0}")]
pub struct RenderError(String);

/// Attributes the redaction processor must never touch: routing depends on them.
const PROTECTED_KEYS: [&str; 3] = ["tenant.id", "tenant.tier", "telemux.principal"];

const INGEST: &str = "ingest";

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    fn enabled_for(self, tenant: &RoutedTenant) -> bool {
        match self {
            Signal::Traces => tenant.signals.traces,
            Signal::Logs => tenant.signals.logs,
            Signal::Metrics => tenant.signals.metrics,
        }
    }

    /// Sampling applies to traces and logs; metrics are aggregates and are never sampled.
    fn sampled(self) -> bool {
        !matches!(self, Signal::Metrics)
    }
}

/// The top level of a collector config, in the order people read it.
#[derive(Serialize)]
struct CollectorConfig {
    extensions: Map<String, Value>,
    receivers: Map<String, Value>,
    processors: Map<String, Value>,
    connectors: Map<String, Value>,
    exporters: Map<String, Value>,
    service: Service,
}

#[derive(Serialize)]
struct Service {
    extensions: Vec<String>,
    telemetry: Value,
    pipelines: Map<String, Value>,
}

/// Renders the collector configuration for a plan. Deterministic: tenants are sorted by the
/// plan, maps are ordered by key.
pub fn render_collector_config(plan: &CollectorPlan) -> Result<RenderedConfig, RenderError> {
    render_with_secrets_dir(plan, SECRETS_DIR)
}

/// Renders with the Secret's files under `secrets_dir` instead of where pods mount them, so the
/// same config can be checked by a collector binary outside a pod.
pub fn render_with_secrets_dir(
    plan: &CollectorPlan,
    secrets_dir: &str,
) -> Result<RenderedConfig, RenderError> {
    let config = build(plan, secrets_dir);
    let yaml = serde_saphyr::to_string(&config).map_err(|e| RenderError(e.to_string()))?;
    let hash = hex_sha256(yaml.as_bytes());
    Ok(RenderedConfig { yaml, hash })
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn build(plan: &CollectorPlan, secrets_dir: &str) -> CollectorConfig {
    let secret_file = |name: &str| format!("${{file:{secrets_dir}/{name}}}");
    let mut extensions = Map::new();
    let mut receivers = Map::new();
    let mut processors = Map::new();
    let mut connectors = Map::new();
    let mut exporters = Map::new();
    let mut pipelines = Map::new();

    extensions.insert(
        "basicauth/ingest".into(),
        json!({ "htpasswd": { "file": format!("{secrets_dir}/{HTPASSWD_FILE}") } }),
    );
    extensions.insert(
        "health_check".into(),
        json!({ "endpoint": format!("0.0.0.0:{HEALTH_PORT}") }),
    );
    // One bbolt file per exporter instance under the queue volume; compaction gives the disk
    // back once a backlog drained.
    extensions.insert(
        QUEUE_STORAGE.into(),
        json!({
            "directory": QUEUE_DIR,
            "create_directory": true,
            "compaction": { "directory": QUEUE_DIR, "on_start": true, "on_rebound": true },
        }),
    );
    let budget = plan_queue_budget(plan);

    let auth = json!({ "authenticator": "basicauth/ingest" });
    receivers.insert(
        "otlp".into(),
        json!({ "protocols": {
            "grpc": { "endpoint": format!("0.0.0.0:{}", plan.ports.grpc), "auth": auth },
            "http": { "endpoint": format!("0.0.0.0:{}", plan.ports.http), "auth": auth },
        }}),
    );

    // Ingest stage, shared by all tenants of a signal.
    processors.insert(
        "memory_limiter".into(),
        json!({
            "check_interval": "1s",
            "limit_percentage": MEMORY_LIMIT_PERCENTAGE,
            "spike_limit_percentage": MEMORY_SPIKE_PERCENTAGE,
        }),
    );
    processors.insert(
        "resource/principal".into(),
        json!({ "attributes": [
            { "key": "telemux.principal", "from_context": "auth.username", "action": "upsert" }
        ]}),
    );
    // The identity comes from the credential, never from the client's own attributes; only the
    // platform, trusted to act for tenants, keeps the tenant.id it sent.
    let stamp = format!(
        r#"set(resource.attributes["tenant.id"], resource.attributes["telemux.principal"]) where resource.attributes["telemux.principal"] != "{PLATFORM_USER}""#
    );
    let stamp_statements = json!([{ "context": "resource", "statements": [stamp] }]);
    processors.insert(
        "transform/tenant_id".into(),
        json!({
            "error_mode": "propagate",
            "trace_statements": stamp_statements,
            "log_statements": stamp_statements,
            "metric_statements": stamp_statements,
        }),
    );
    let has_exclusions = !plan.excluded.is_empty();
    if has_exclusions {
        let conditions: Vec<String> = plan
            .excluded
            .iter()
            .map(|e| tenant_condition(&e.tenant_id))
            .collect();
        processors.insert("filter/excluded_tenants".into(), {
            // Whole resources go: everything of an excluded tenant shares its resource.
            let by_resource = json!([{ "context": "resource", "conditions": conditions }]);
            json!({
                "error_mode": "ignore",
                "trace_conditions": by_resource,
                "log_conditions": by_resource,
                "metric_conditions": by_resource,
            })
        });
    }
    processors.insert(
        "redaction/baseline".into(),
        redaction(
            &plan.baseline.blocked_values,
            &plan.baseline.blocked_key_patterns,
        ),
    );
    let blob = plan.blob_containers.as_ref().map(|containers| {
        exporters.insert(
            "azure_blob/regional".into(),
            json!({
                "auth": {
                    "type": "connection_string",
                    "connection_string": secret_file(BLOB_CONNECTION_STRING_FILE),
                },
                "container": {
                    "traces": confmap_escape(&containers.traces),
                    "logs": confmap_escape(&containers.logs),
                    "metrics": confmap_escape(&containers.metrics),
                },
                // Persistent and batched like the tenants' exporters: a blob per batch, not
                // per request, and a restart loses nothing.
                "sending_queue": {
                    "enabled": true,
                    "sizer": "bytes",
                    "queue_size": budget.queue_bytes(Tier::Premium),
                    "storage": QUEUE_STORAGE,
                    "batch": { "flush_timeout": "5s", "sizer": "bytes", "min_size": budget.batch_bytes, "max_size": budget.batch_bytes },
                },
            }),
        );
        "azure_blob/regional".to_owned()
    });

    let platform_sink = plan.platform.as_ref().is_some_and(|p| p.has_sink);
    if platform_sink {
        exporters.insert(
            PLATFORM_EXPORTER.into(),
            appinsights_exporter(
                secret_file(PLATFORM_CONNECTION_STRING_FILE),
                Tier::Premium,
                &budget,
            ),
        );
    }

    for tenant in &plan.routed {
        let id = &tenant.tenant_id;
        processors.insert(
            format!("resource/tenant_{id}"),
            json!({ "attributes": [
                { "key": "tenant.tier", "value": tenant.tier.as_str(), "action": "upsert" }
            ]}),
        );
        if !tenant.blocked_values.is_empty() || !tenant.blocked_key_patterns.is_empty() {
            processors.insert(
                format!("redaction/tenant_{id}"),
                redaction(&tenant.blocked_values, &tenant.blocked_key_patterns),
            );
        }
        if let Some(percentage) = tenant.sampling_percentage {
            processors.insert(
                format!("probabilistic_sampler/tenant_{id}"),
                json!({ "sampling_percentage": percentage }),
            );
        }
        exporters.insert(
            tenant_exporter(id),
            appinsights_exporter(
                secret_file(&tenant_connection_string_file(id)),
                tenant.tier,
                &budget,
            ),
        );
    }

    for signal in Signal::ALL {
        let s = signal.name();
        let router = format!("routing/{s}");
        let platform_pipeline = format!("{s}/platform");
        let mut table = Vec::new();
        if platform_sink {
            // Platform items that name no tenant are the platform's own telemetry.
            table.push(json!({
                "condition": r#"resource.attributes["tenant.id"] == nil"#,
                "pipelines": [platform_pipeline],
            }));
        }
        for tenant in plan.routed.iter().filter(|t| signal.enabled_for(t)) {
            let id = &tenant.tenant_id;
            table.push(json!({
                "condition": tenant_condition(id),
                "pipelines": [format!("{s}/tenant_{id}")],
            }));
            let mut tenant_processors = vec![format!("resource/tenant_{id}")];
            if processors.contains_key(&format!("redaction/tenant_{id}")) {
                tenant_processors.push(format!("redaction/tenant_{id}"));
            }
            if signal.sampled() && tenant.sampling_percentage.is_some() {
                tenant_processors.push(format!("probabilistic_sampler/tenant_{id}"));
            }
            let mut tenant_exporters = vec![tenant_exporter(id)];
            tenant_exporters.extend(blob.clone());
            pipelines.insert(
                format!("{s}/tenant_{id}"),
                json!({
                    "receivers": [router],
                    "processors": tenant_processors,
                    "exporters": tenant_exporters,
                }),
            );
        }

        let mut ingest_processors = vec![
            "memory_limiter",
            "resource/principal",
            "transform/tenant_id",
        ];
        if has_exclusions {
            ingest_processors.push("filter/excluded_tenants");
        }
        ingest_processors.push("redaction/baseline");

        let ingest_exporters = if table.is_empty() {
            // Nothing to deliver to: accept (authenticated) data and drop it, counted by the
            // nop exporter, rather than failing clients.
            exporters.insert("nop".into(), json!({}));
            vec!["nop".to_owned()]
        } else {
            let mut routing = json!({ "error_mode": "ignore", "table": table });
            if platform_sink && plan.unknown_tenant == UnknownTenantPolicy::Platform {
                routing["default_pipelines"] = json!([platform_pipeline]);
            }
            connectors.insert(router.clone(), routing);
            if platform_sink {
                pipelines.insert(
                    platform_pipeline.clone(),
                    json!({
                        "receivers": [router],
                        "exporters": [PLATFORM_EXPORTER],
                    }),
                );
            }
            vec![router]
        };
        pipelines.insert(
            format!("{s}/{INGEST}"),
            json!({
                "receivers": ["otlp"],
                "processors": ingest_processors,
                "exporters": ingest_exporters,
            }),
        );
    }

    CollectorConfig {
        service: Service {
            extensions: extensions.keys().cloned().collect(),
            telemetry: json!({
                "metrics": {
                    "level": "normal",
                    "readers": [{ "pull": { "exporter": { "prometheus": {
                        "host": "0.0.0.0", "port": METRICS_PORT
                    }}}}],
                }
            }),
            pipelines,
        },
        extensions,
        receivers,
        processors,
        connectors,
        exporters,
    }
}

fn tenant_condition(tenant_id: &str) -> String {
    // tenant ids are DNS labels: nothing in them needs quoting in OTTL.
    format!(r#"resource.attributes["tenant.id"] == "{tenant_id}""#)
}

/// The extension that holds every exporter's queue.
const QUEUE_STORAGE: &str = "file_storage/queue";
const PLATFORM_EXPORTER: &str = "telemux_appinsights/platform";

fn tenant_exporter(tenant_id: &str) -> String {
    format!("telemux_appinsights/tenant_{tenant_id}")
}

/// How much the plan's exporters may queue on disk and batch in memory.
pub fn plan_queue_budget(plan: &CollectorPlan) -> QueueBudget {
    collector_queue_budget(
        plan.memory_limit_bytes,
        plan.queue_volume_bytes,
        &exporter_tiers(plan),
    )
}

/// The tier of every exporter instance the collector runs: one per queued exporter and
/// signal. The platform's and the regional copy's queues are sized as premium.
fn exporter_tiers(plan: &CollectorPlan) -> Vec<Tier> {
    let mut tiers: Vec<Tier> = plan
        .routed
        .iter()
        .flat_map(|t| {
            Signal::ALL
                .iter()
                .filter(|s| s.enabled_for(t))
                .map(|_| t.tier)
        })
        .collect();
    let shared_sinks = usize::from(plan.platform.as_ref().is_some_and(|p| p.has_sink))
        + usize::from(plan.blob_containers.is_some());
    tiers.extend(std::iter::repeat_n(
        Tier::Premium,
        shared_sinks * Signal::ALL.len(),
    ));
    tiers
}

/// A tenant's (or the platform's) App Insights exporter: a persistent queue bounded in bytes by
/// the tier, refusing (not dropping) when full; retried until App Insights answers, with
/// `max_age` (the exporter's default, below Breeze's 48 h) as the only expiry, so that every
/// drop is counted with its reason.
fn appinsights_exporter(connection_string: String, tier: Tier, budget: &QueueBudget) -> Value {
    json!({
        "connection_string": connection_string,
        "retry_on_failure": {
            "enabled": true,
            "initial_interval": "1s",
            "max_interval": "60s",
            "max_elapsed_time": "0s",
        },
        "sending_queue": {
            "enabled": true,
            "sizer": "bytes",
            "queue_size": budget.queue_bytes(tier),
            "num_consumers": QUEUE_CONSUMERS,
            "block_on_overflow": false,
            "storage": QUEUE_STORAGE,
            "batch": {
                "flush_timeout": "200ms",
                "sizer": "bytes",
                "min_size": budget.batch_bytes,
                "max_size": budget.batch_bytes,
            },
        },
    })
}

fn redaction(blocked_values: &[String], blocked_key_patterns: &[String]) -> Value {
    let mut config = json!({
        "allow_all_keys": true,
        "ignored_keys": PROTECTED_KEYS,
        "summary": "silent",
    });
    if !blocked_values.is_empty() {
        config["blocked_values"] = blocked_values.iter().map(|v| confmap_escape(v)).collect();
    }
    if !blocked_key_patterns.is_empty() {
        config["blocked_key_patterns"] = blocked_key_patterns
            .iter()
            .map(|v| confmap_escape(v))
            .collect();
    }
    config
}

/// The collector expands `${...}` in every string of its config; user text must reach it
/// literally, so `$` is written as `$$`.
fn confmap_escape(s: &str) -> String {
    s.replace('$', "$$")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::collector::{BaselineRedaction, BlobContainers, OtlpPorts, TenantExclusion};
    use crate::api::tenant::Signals;
    use crate::pipeline::plan::PlatformPlan;

    fn tenant(id: &str) -> RoutedTenant {
        RoutedTenant {
            tenant_id: id.to_owned(),
            tier: Tier::Standard,
            signals: Signals::default(),
            blocked_values: Vec::new(),
            blocked_key_patterns: Vec::new(),
            sampling_percentage: None,
        }
    }

    fn plan(routed: Vec<RoutedTenant>) -> CollectorPlan {
        CollectorPlan {
            ports: OtlpPorts {
                grpc: 4317,
                http: 4318,
            },
            baseline: BaselineRedaction {
                blocked_values: vec!["secret".to_owned()],
                blocked_key_patterns: Vec::new(),
            },
            blob_containers: None,
            platform: None,
            unknown_tenant: UnknownTenantPolicy::Drop,
            routed,
            excluded: Vec::new(),
            rejected: Vec::new(),
            secret_files: BTreeMap::new(),
            memory_limit_bytes: 512 << 20,
            queue_volume_bytes: 2 << 30,
        }
    }

    fn rendered(plan: &CollectorPlan) -> Value {
        let yaml = render_collector_config(plan).unwrap().yaml;
        serde_saphyr::from_str(&yaml).unwrap()
    }

    /// The `processors` or `exporters` list of a rendered pipeline; `None` if there is no
    /// such pipeline.
    fn members(config: &Value, pipeline: &str, list: &str) -> Option<Vec<String>> {
        let pipeline = config["service"]["pipelines"].get(pipeline)?;
        Some(
            pipeline[list]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .map(|id| id.as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    #[test]
    fn a_tenants_redaction_runs_in_each_of_its_pipelines_and_no_other_tenants() {
        let acme = RoutedTenant {
            blocked_values: vec!["CUST-[0-9]{6}".to_owned()],
            ..tenant("acme")
        };
        let config = rendered(&plan(vec![acme, tenant("globex")]));
        assert!(config["processors"]["redaction/tenant_acme"].is_object());
        assert!(
            config["processors"]
                .get("redaction/tenant_globex")
                .is_none()
        );
        for signal in ["traces", "logs", "metrics"] {
            let acme = members(&config, &format!("{signal}/tenant_acme"), "processors").unwrap();
            assert_eq!(acme, ["resource/tenant_acme", "redaction/tenant_acme"]);
            let globex = members(&config, &format!("{signal}/tenant_globex"), "processors");
            assert_eq!(globex.unwrap(), ["resource/tenant_globex"]);
        }
    }

    #[test]
    fn a_tenants_sampler_runs_on_traces_and_logs_never_on_metrics() {
        let acme = RoutedTenant {
            sampling_percentage: Some(25.0),
            ..tenant("acme")
        };
        let config = rendered(&plan(vec![acme]));
        assert_eq!(
            config["processors"]["probabilistic_sampler/tenant_acme"]["sampling_percentage"],
            25.0
        );
        let processors = |signal: &str| {
            members(&config, &format!("{signal}/tenant_acme"), "processors").unwrap()
        };
        let sampled = ["resource/tenant_acme", "probabilistic_sampler/tenant_acme"];
        assert_eq!(processors("traces"), sampled);
        assert_eq!(processors("logs"), sampled);
        assert_eq!(processors("metrics"), ["resource/tenant_acme"]);
    }

    #[test]
    fn a_tenants_exporter_ends_each_enabled_signals_pipeline_and_only_those() {
        let acme = RoutedTenant {
            signals: Signals {
                traces: true,
                logs: false,
                metrics: true,
            },
            ..tenant("acme")
        };
        let mut plan = plan(vec![acme]);
        plan.blob_containers = Some(BlobContainers {
            traces: "traces".to_owned(),
            logs: "logs".to_owned(),
            metrics: "metrics".to_owned(),
        });
        let config = rendered(&plan);
        for signal in ["traces", "metrics"] {
            let exporters = members(&config, &format!("{signal}/tenant_acme"), "exporters");
            assert_eq!(
                exporters.unwrap(),
                ["telemux_appinsights/tenant_acme", "azure_blob/regional"]
            );
        }
        assert_eq!(members(&config, "logs/tenant_acme", "exporters"), None);
        // With no tenant's logs to deliver, ingest drops them into nop instead of a router.
        assert_eq!(
            members(&config, "logs/ingest", "exporters").unwrap(),
            ["nop"]
        );
        assert!(config["connectors"].get("routing/logs").is_none());
    }

    /// Every component a pipeline names is defined in its section (connectors may be either
    /// end of a pipeline), whatever the plan holds.
    #[test]
    fn pipelines_name_only_defined_components() {
        let acme = RoutedTenant {
            blocked_key_patterns: vec![".*password.*".to_owned()],
            sampling_percentage: Some(10.0),
            ..tenant("acme")
        };
        let globex = RoutedTenant {
            signals: Signals {
                traces: false,
                logs: true,
                metrics: false,
            },
            tier: Tier::Premium,
            ..tenant("globex")
        };
        let mut with_everything = plan(vec![acme, globex]);
        with_everything.platform = Some(PlatformPlan { has_sink: true });
        with_everything.unknown_tenant = UnknownTenantPolicy::Platform;
        with_everything.excluded = vec![TenantExclusion {
            tenant_id: "initech".to_owned(),
            reason: "Suspended".to_owned(),
        }];
        for plan in [plan(Vec::new()), with_everything] {
            let config = rendered(&plan);
            let defined =
                |sections: &[&str], id: &str| sections.iter().any(|s| config[*s].get(id).is_some());
            let pipelines = config["service"]["pipelines"].as_object().unwrap();
            for (name, pipeline) in pipelines {
                for (list, sections) in [
                    ("receivers", &["receivers", "connectors"][..]),
                    ("processors", &["processors"][..]),
                    ("exporters", &["exporters", "connectors"][..]),
                ] {
                    for id in pipeline[list].as_array().into_iter().flatten() {
                        let id = id.as_str().unwrap();
                        assert!(defined(sections, id), "{name} names undefined {id}");
                    }
                }
            }
        }
    }
}
