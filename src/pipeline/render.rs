//! Renders a collector plan into OpenTelemetry Collector YAML.
//!
//! One span's way (see DESIGN.md): OTLP receiver authenticated per tenant → memory_limiter →
//! `telemux.principal` from the authenticated user → `tenant.id` set from it (only the platform
//! may keep its own) → baseline redaction → routing by `tenant.id` → one pipeline per tenant and
//! signal (tier stamp, tenant redaction, sampling) → the tenant's `telemux_appinsights`
//! exporter, whose persistent queue batches, retries and survives restarts (+ the regional Blob
//! copy). An excluded (suspended, or not allowed in the region) tenant's items, and a routed
//! tenant's items of a signal it disables, are routed the same way to pipelines of their own,
//! `<signal>/excluded_<id>`, whose one processor (`filter/suspended_<id>`,
//! `filter/region_not_allowed_<id>` or `filter/signal_disabled_<id>`) drops them all into `nop`:
//! that processor's `otelcol_processor_incoming_items` counts the tenant's drops, per signal and
//! reason, and nothing of what it drops reaches any other exporter.
//!
//! No `batch` processor: it would acknowledge data before any queue holds it, so a full queue
//! could not refuse the client and a restart would lose what it held. Batching happens in each
//! exporter's sending queue, after the data is on the queue volume.
//!
//! Every component id comes from one constructor in [`component_ids`], used both where the
//! component is defined and wherever it is named; the same module reads the tenant back out of
//! the ids the collector's own metrics carry. What a pipeline runs is decided from the plan's
//! fields, and the definitions come from the same decision, so a pipeline cannot name an
//! undefined component.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};
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
use crate::api::collector::{BlobContainers, TenantExclusion, UnknownTenantPolicy};
use crate::api::tenant::Tier;
use component_ids as ids;

/// Rendered collector configuration and its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig {
    pub yaml: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not serialize the collector configuration: {0}")]
pub struct RenderError(String);

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
    let shared_sinks =
        usize::from(platform_sink(plan)) + usize::from(plan.blob_containers.is_some());
    tiers.extend(std::iter::repeat_n(
        Tier::Premium,
        shared_sinks * Signal::ALL.len(),
    ));
    tiers
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A component's (or pipeline's) id as the collector config spells it: `type` or `type/name`.
/// Ordered as its text, so the sections come out sorted as they always have.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
struct ComponentId(String);

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The only place component ids are spelled: one constructor per component (for the renderer),
/// and, next to them, the public readers that take the tenant back out of an id the collector's
/// own metrics carry (`processor`, `exporter` labels), for the operator.
pub mod component_ids {
    use super::{ComponentId, Signal};
    use crate::api::reasons::{self, Reason};
    use crate::validation::is_dns_label;

    /// The kinds of the components the readers below read.
    const TIER_STAMP: &str = "resource";
    const EXCLUSION_FILTER: &str = "filter";
    const APPINSIGHTS: &str = "telemux_appinsights";
    const SAMPLER: &str = "probabilistic_sampler";

    /// Names of a routed tenant's components: `tenant_<id>`.
    const TENANT: &str = "tenant_";
    /// Names of an excluded tenant's pipelines, and of a routed tenant's pipelines of the
    /// signals it disables: `excluded_<id>`.
    const EXCLUDED: &str = "excluded_";

    /// Why a tenant's items are dropped: the reasons a plan excludes a tenant with, and a
    /// routed tenant's disabled signal; so the only ones an exclusion filter's id is read back
    /// as.
    const EXCLUSION_REASONS: [Reason; 3] = [
        reasons::SUSPENDED,
        reasons::REGION_NOT_ALLOWED,
        reasons::SIGNAL_DISABLED,
    ];

    fn bare(kind: &str) -> ComponentId {
        ComponentId(kind.to_owned())
    }

    fn named(kind: &str, name: &str) -> ComponentId {
        ComponentId(format!("{kind}/{name}"))
    }

    /// Tenant ids are DNS labels (no `_`), so `tenant_<id>` is a valid name that no shared
    /// component's name can equal, and that reads back as exactly one tenant.
    fn tenant(kind: &str, tenant_id: &str) -> ComponentId {
        named(kind, &format!("{TENANT}{tenant_id}"))
    }

    /// An exclusion reason as component names spell it: `Suspended` is `suspended`,
    /// `RegionNotAllowed` is `region_not_allowed`.
    fn reason_name(reason: &str) -> String {
        let mut name = String::with_capacity(reason.len() + 4);
        for (i, c) in reason.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        }
        name
    }

    /// The name of `id` if it is of component type `kind`: `kind/<name>`.
    fn name_of<'a>(id: &'a str, kind: &str) -> Option<&'a str> {
        id.strip_prefix(kind)?.strip_prefix('/')
    }

    /// The tenant of `kind/tenant_<id>`.
    fn tenant_of<'a>(id: &'a str, kind: &str) -> Option<&'a str> {
        let tenant_id = name_of(id, kind)?.strip_prefix(TENANT)?;
        is_dns_label(tenant_id).then_some(tenant_id)
    }

    /// The tenant whose accepted items a processor id counts: `resource/tenant_<id>`, the tier
    /// stamp each of a routed tenant's pipelines starts with, so that its
    /// `otelcol_processor_incoming_items` (per `otel_signal`) is what the collector accepted
    /// from (or, via the platform, for) the tenant to deliver. `None` for any other id.
    pub fn tier_stamp_tenant(processor_id: &str) -> Option<&str> {
        tenant_of(processor_id, TIER_STAMP)
    }

    /// The tenant whose sampler a processor id is: `probabilistic_sampler/tenant_<id>`. What
    /// enters it and does not leave it was sampled out. `None` for any other id.
    pub fn sampler_tenant(processor_id: &str) -> Option<&str> {
        tenant_of(processor_id, SAMPLER)
    }

    /// The tenant an exporter id delivers for: `telemux_appinsights/tenant_<id>`. `None` for
    /// any other id (the platform's exporter, the regional copy, nop).
    pub fn exporter_tenant(exporter_id: &str) -> Option<&str> {
        tenant_of(exporter_id, APPINSIGHTS)
    }

    /// The tenant, and why, whose dropped items a processor id counts:
    /// `filter/suspended_<id>` ([`reasons::SUSPENDED`]), `filter/region_not_allowed_<id>`
    /// ([`reasons::REGION_NOT_ALLOWED`]) or, for a routed tenant's disabled signals,
    /// `filter/signal_disabled_<id>` ([`reasons::SIGNAL_DISABLED`]): the one processor of the
    /// tenant's `excluded_<id>` pipelines, which drops everything: its
    /// `otelcol_processor_incoming_items` (per `otel_signal`) is what the collector accepted
    /// from (or, via the platform, for) the tenant and dropped for that reason. `None` for any
    /// other id.
    pub fn exclusion_filter_tenant(processor_id: &str) -> Option<(&str, Reason)> {
        let name = name_of(processor_id, EXCLUSION_FILTER)?;
        EXCLUSION_REASONS.into_iter().find_map(|reason| {
            let tenant_id = name
                .strip_prefix(reason_name(reason.name).as_str())?
                .strip_prefix('_')?;
            is_dns_label(tenant_id).then_some((tenant_id, reason))
        })
    }

    pub(super) fn ingest_auth() -> ComponentId {
        named("basicauth", "ingest")
    }

    pub(super) fn health_check() -> ComponentId {
        bare("health_check")
    }

    /// The extension that holds every exporter's queue.
    pub(super) fn queue_storage() -> ComponentId {
        named("file_storage", "queue")
    }

    pub(super) fn otlp() -> ComponentId {
        bare("otlp")
    }

    pub(super) fn memory_limiter() -> ComponentId {
        bare("memory_limiter")
    }

    pub(super) fn principal() -> ComponentId {
        named("resource", "principal")
    }

    pub(super) fn tenant_id_stamp() -> ComponentId {
        named("transform", "tenant_id")
    }

    pub(super) fn baseline_redaction() -> ComponentId {
        named("redaction", "baseline")
    }

    pub(super) fn tenant_tier(tenant_id: &str) -> ComponentId {
        tenant(TIER_STAMP, tenant_id)
    }

    /// The filter that drops everything of an excluded tenant, named by the reason (a
    /// [`TenantExclusion`](crate::api::collector::TenantExclusion)'s `reason`) and the tenant.
    pub(super) fn exclusion_filter(reason: &str, tenant_id: &str) -> ComponentId {
        named(
            EXCLUSION_FILTER,
            &format!("{}_{tenant_id}", reason_name(reason)),
        )
    }

    /// The filter that drops everything of a routed tenant's signals that its `spec.signals`
    /// turns off.
    pub(super) fn signal_disabled_filter(tenant_id: &str) -> ComponentId {
        exclusion_filter(reasons::SIGNAL_DISABLED.name, tenant_id)
    }

    pub(super) fn tenant_redaction(tenant_id: &str) -> ComponentId {
        tenant("redaction", tenant_id)
    }

    pub(super) fn tenant_sampler(tenant_id: &str) -> ComponentId {
        tenant(SAMPLER, tenant_id)
    }

    pub(super) fn routing(signal: Signal) -> ComponentId {
        named("routing", signal.name())
    }

    pub(super) fn nop() -> ComponentId {
        bare("nop")
    }

    pub(super) fn regional_blob() -> ComponentId {
        named("azure_blob", "regional")
    }

    pub(super) fn platform_exporter() -> ComponentId {
        named("telemux_appinsights", "platform")
    }

    pub(super) fn tenant_exporter(tenant_id: &str) -> ComponentId {
        tenant(APPINSIGHTS, tenant_id)
    }

    pub(super) fn ingest_pipeline(signal: Signal) -> ComponentId {
        named(signal.name(), "ingest")
    }

    pub(super) fn platform_pipeline(signal: Signal) -> ComponentId {
        named(signal.name(), "platform")
    }

    pub(super) fn tenant_pipeline(signal: Signal, tenant_id: &str) -> ComponentId {
        tenant(signal.name(), tenant_id)
    }

    /// Like `tenant_<id>`, `excluded_<id>` is a name no shared component's name can equal.
    /// A tenant id is either routed or excluded, never both, so the pipelines of an excluded
    /// tenant and of a routed tenant's disabled signals cannot share an id.
    pub(super) fn excluded_pipeline(signal: Signal, tenant_id: &str) -> ComponentId {
        named(signal.name(), &format!("{EXCLUDED}{tenant_id}"))
    }
}

/// A section of the config: components by id.
type Components = BTreeMap<ComponentId, Value>;

/// The top level of a collector config, in the order people read it.
#[derive(Serialize)]
struct CollectorConfig {
    extensions: Components,
    receivers: Components,
    processors: Components,
    connectors: Components,
    exporters: Components,
    service: Service,
}

#[derive(Serialize)]
struct Service {
    extensions: Vec<ComponentId>,
    telemetry: Value,
    pipelines: BTreeMap<ComponentId, Pipeline>,
}

/// A service pipeline. Fields in alphabetical order, like every other key of the config.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Pipeline {
    exporters: Vec<ComponentId>,
    /// Empty only for the platform's pipeline, which then has no `processors` key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    processors: Vec<ComponentId>,
    receivers: Vec<ComponentId>,
}

/// Each section from the plan; the routing of each signal is decided once and shared by the
/// connectors, exporters and pipelines that follow from it.
fn build(plan: &CollectorPlan, secrets_dir: &str) -> CollectorConfig {
    let flows = Signal::ALL.map(|signal| Flow::of(plan, signal));
    let extensions = extensions(secrets_dir);
    CollectorConfig {
        service: Service {
            extensions: extensions.keys().cloned().collect(),
            telemetry: telemetry(),
            pipelines: pipelines(plan, &flows),
        },
        extensions,
        receivers: receivers(plan),
        processors: processors(plan),
        connectors: connectors(plan, &flows),
        exporters: exporters(plan, secrets_dir, &flows),
    }
}

/// Where one signal goes after ingest: the rows of its routing table, each with the pipeline
/// it feeds. No rows when the collector has nowhere to deliver the signal.
struct Flow {
    signal: Signal,
    routes: Vec<Route>,
}

/// A row of a signal's routing table and the pipeline it feeds.
struct Route {
    condition: String,
    pipeline_id: ComponentId,
    pipeline: Pipeline,
}

impl Flow {
    fn of(plan: &CollectorPlan, signal: Signal) -> Flow {
        // Platform items that name no tenant are the platform's own telemetry.
        let platform = platform_sink(plan).then(|| Route {
            condition: r#"resource.attributes["tenant.id"] == nil"#.to_owned(),
            pipeline_id: ids::platform_pipeline(signal),
            pipeline: Pipeline {
                exporters: vec![ids::platform_exporter()],
                processors: Vec::new(),
                receivers: vec![ids::routing(signal)],
            },
        });
        let (enabled, disabled): (Vec<&RoutedTenant>, Vec<&RoutedTenant>) =
            plan.routed.iter().partition(|t| signal.enabled_for(t));
        let tenants = enabled.into_iter().map(|tenant| Route {
            condition: tenant_condition(&tenant.tenant_id),
            pipeline_id: ids::tenant_pipeline(signal, &tenant.tenant_id),
            pipeline: tenant_pipeline(plan, tenant, signal),
        });
        // Every tenant that sends here has a row of its own for every signal: a signal without
        // one would fall through to the platform's App Insights under `unknownTenant: Platform`
        // (and be dropped uncounted otherwise). So a routed tenant's disabled signal, and every
        // signal of an excluded tenant, whatever its `spec.signals` (which the plan does not
        // carry for it), is routed to a pipeline that drops it, counted per tenant and reason.
        // The rows are disjoint (one tenant id each, or none for the platform's own), so a
        // dropping row takes nothing from any other; they come last, after the rows that
        // deliver, sorted by tenant id like those.
        let disabled = disabled.into_iter().map(|tenant| Route {
            condition: tenant_condition(&tenant.tenant_id),
            pipeline_id: ids::excluded_pipeline(signal, &tenant.tenant_id),
            pipeline: signal_disabled_pipeline(tenant, signal),
        });
        let excluded = plan.excluded.iter().map(|exclusion| Route {
            condition: tenant_condition(&exclusion.tenant_id),
            pipeline_id: ids::excluded_pipeline(signal, &exclusion.tenant_id),
            pipeline: excluded_pipeline(exclusion, signal),
        });
        // `<signal>/excluded_<id>` sorts as the tenant id does.
        let mut dropping: Vec<Route> = disabled.chain(excluded).collect();
        dropping.sort_by(|a, b| a.pipeline_id.cmp(&b.pipeline_id));
        let routes = platform
            .into_iter()
            .chain(tenants)
            .chain(dropping)
            .collect();
        Flow { signal, routes }
    }

    /// Does any pipeline of this signal end in nop?
    fn uses_nop(&self) -> bool {
        self.ingest_exporter() == ids::nop()
            || self
                .routes
                .iter()
                .any(|r| r.pipeline.exporters.contains(&ids::nop()))
    }

    /// The signal's routing connector, unless there is nothing to route to.
    fn router(&self) -> Option<ComponentId> {
        (!self.routes.is_empty()).then(|| ids::routing(self.signal))
    }

    /// With nothing to deliver to, ingest accepts (authenticated) data and drops it, counted by
    /// the nop exporter, rather than failing clients.
    fn ingest_exporter(&self) -> ComponentId {
        self.router().unwrap_or_else(ids::nop)
    }
}

/// One tenant's pipeline of one signal: from the signal's router, through the tenant's own
/// processors that apply to the signal, to its exporter and the regional copy.
fn tenant_pipeline(plan: &CollectorPlan, tenant: &RoutedTenant, signal: Signal) -> Pipeline {
    let mut exporters = vec![ids::tenant_exporter(&tenant.tenant_id)];
    if plan.blob_containers.is_some() {
        exporters.push(ids::regional_blob());
    }
    Pipeline {
        exporters,
        processors: running_on(tenant_processors(tenant), signal),
        receivers: vec![ids::routing(signal)],
    }
}

/// One excluded tenant's pipeline of one signal: from the signal's router, through the filter
/// that drops all of it (counted per tenant and reason), to nop and nothing else.
fn excluded_pipeline(exclusion: &TenantExclusion, signal: Signal) -> Pipeline {
    dropping_pipeline(excluded_processors(exclusion), signal)
}

/// A routed tenant's pipeline of a signal it disables: like an excluded tenant's, through the
/// filter that drops all of it (counted as `SignalDisabled`) to nop and nothing else.
fn signal_disabled_pipeline(tenant: &RoutedTenant, signal: Signal) -> Pipeline {
    dropping_pipeline(signal_disabled_processors(tenant), signal)
}

fn dropping_pipeline(processors: Vec<Processor>, signal: Signal) -> Pipeline {
    Pipeline {
        exporters: vec![ids::nop()],
        processors: running_on(processors, signal),
        receivers: vec![ids::routing(signal)],
    }
}

/// A processor and the signals whose pipelines run it. Pipelines and the `processors` section
/// both come from lists of these.
struct Processor {
    id: ComponentId,
    config: Value,
    runs_on: Vec<Signal>,
}

impl Processor {
    fn on_every_signal(id: ComponentId, config: Value) -> Processor {
        Processor {
            id,
            config,
            runs_on: Signal::ALL.to_vec(),
        }
    }
}

fn running_on(processors: Vec<Processor>, signal: Signal) -> Vec<ComponentId> {
    processors
        .into_iter()
        .filter(|p| p.runs_on.contains(&signal))
        .map(|p| p.id)
        .collect()
}

/// The ingest stage every signal shares, in the order it runs.
fn ingest_processors(plan: &CollectorPlan) -> Vec<Processor> {
    let baseline = &plan.baseline;
    let redaction = redaction(&baseline.blocked_values, &baseline.blocked_key_patterns);
    vec![
        Processor::on_every_signal(ids::memory_limiter(), memory_limiter()),
        Processor::on_every_signal(ids::principal(), principal()),
        Processor::on_every_signal(ids::tenant_id_stamp(), tenant_id_stamp()),
        Processor::on_every_signal(ids::baseline_redaction(), redaction),
    ]
}

/// An excluded tenant's one processor: the filter named by why it is excluded, which drops
/// everything its pipelines carry.
fn excluded_processors(exclusion: &TenantExclusion) -> Vec<Processor> {
    let id = ids::exclusion_filter(&exclusion.reason, &exclusion.tenant_id);
    vec![Processor::on_every_signal(id, drop_everything())]
}

/// A routed tenant's filter of the signals it disables, running on those only; none (so not
/// defined) when it disables none.
fn signal_disabled_processors(tenant: &RoutedTenant) -> Vec<Processor> {
    let disabled: Vec<Signal> = Signal::ALL
        .into_iter()
        .filter(|s| !s.enabled_for(tenant))
        .collect();
    if disabled.is_empty() {
        return Vec::new();
    }
    vec![Processor {
        id: ids::signal_disabled_filter(&tenant.tenant_id),
        config: drop_everything(),
        runs_on: disabled,
    }]
}

/// A tenant's own processors, in the order its pipelines run them: the tier stamp; its
/// redaction, when it blocks anything the baseline does not; its sampler, when below 100%.
fn tenant_processors(tenant: &RoutedTenant) -> Vec<Processor> {
    let id = &tenant.tenant_id;
    let mut processors = vec![Processor::on_every_signal(
        ids::tenant_tier(id),
        tier_stamp(tenant.tier),
    )];
    if !tenant.blocked_values.is_empty() || !tenant.blocked_key_patterns.is_empty() {
        let redaction = redaction(&tenant.blocked_values, &tenant.blocked_key_patterns);
        processors.push(Processor::on_every_signal(
            ids::tenant_redaction(id),
            redaction,
        ));
    }
    if let Some(percentage) = tenant.sampling_percentage {
        processors.push(Processor {
            id: ids::tenant_sampler(id),
            config: sampler(percentage),
            runs_on: Signal::ALL.into_iter().filter(|s| s.sampled()).collect(),
        });
    }
    processors
}

fn platform_sink(plan: &CollectorPlan) -> bool {
    plan.platform.as_ref().is_some_and(|p| p.has_sink)
}

fn extensions(secrets_dir: &str) -> Components {
    Components::from([
        (
            ids::ingest_auth(),
            json!({ "htpasswd": { "file": format!("{secrets_dir}/{HTPASSWD_FILE}") } }),
        ),
        (
            ids::health_check(),
            json!({ "endpoint": format!("0.0.0.0:{HEALTH_PORT}") }),
        ),
        // One bbolt file per exporter instance under the queue volume; compaction gives the
        // disk back once a backlog drained.
        (
            ids::queue_storage(),
            json!({
                "directory": QUEUE_DIR,
                "create_directory": true,
                "compaction": { "directory": QUEUE_DIR, "on_start": true, "on_rebound": true },
            }),
        ),
    ])
}

fn receivers(plan: &CollectorPlan) -> Components {
    let auth = json!({ "authenticator": ids::ingest_auth() });
    let otlp = json!({ "protocols": {
        "grpc": { "endpoint": format!("0.0.0.0:{}", plan.ports.grpc), "auth": auth },
        "http": { "endpoint": format!("0.0.0.0:{}", plan.ports.http), "auth": auth },
    }});
    Components::from([(ids::otlp(), otlp)])
}

/// The ingest stage's processors; every routed tenant's own, defined even where its enabled
/// signals leave one unused (a metrics-only tenant's sampler: the collector ignores components
/// no pipeline names), and its signal-disabled filter, once, only if it disables a signal; every
/// excluded tenant's filter.
fn processors(plan: &CollectorPlan) -> Components {
    let tenants = plan.routed.iter().flat_map(tenant_processors);
    let disabled = plan.routed.iter().flat_map(signal_disabled_processors);
    let excluded = plan.excluded.iter().flat_map(excluded_processors);
    ingest_processors(plan)
        .into_iter()
        .chain(tenants)
        .chain(disabled)
        .chain(excluded)
        .map(|p| (p.id, p.config))
        .collect()
}

/// A routing connector for each signal that has somewhere to go.
fn connectors(plan: &CollectorPlan, flows: &[Flow]) -> Components {
    flows
        .iter()
        .filter_map(|flow| Some((flow.router()?, routing(plan, flow))))
        .collect()
}

/// The tenants' and the platform's App Insights exporters, the regional copy, and nop if some
/// signal has nowhere to go, some tenant is excluded or a routed tenant disables a signal.
fn exporters(plan: &CollectorPlan, secrets_dir: &str, flows: &[Flow]) -> Components {
    let budget = plan_queue_budget(plan);
    let mut exporters = Components::new();
    if let Some(containers) = &plan.blob_containers {
        let blob = blob_exporter(containers, secrets_dir, &budget);
        exporters.insert(ids::regional_blob(), blob);
    }
    if platform_sink(plan) {
        let connection_string = secret_file(secrets_dir, PLATFORM_CONNECTION_STRING_FILE);
        // Never a delivery report: the platform's figures are the platform operator's own.
        let platform = appinsights_exporter(connection_string, Tier::Premium, &budget, None);
        exporters.insert(ids::platform_exporter(), platform);
    }
    for tenant in &plan.routed {
        let id = &tenant.tenant_id;
        let connection_string = secret_file(secrets_dir, &tenant_connection_string_file(id));
        let report = tenant.delivery_report_interval.as_deref();
        let exporter = appinsights_exporter(connection_string, tenant.tier, &budget, report);
        exporters.insert(ids::tenant_exporter(id), exporter);
    }
    if flows.iter().any(Flow::uses_nop) {
        exporters.insert(ids::nop(), json!({}));
    }
    exporters
}

/// Per signal, the ingest pipeline into its router (or nop) and the pipelines the router feeds.
fn pipelines(plan: &CollectorPlan, flows: &[Flow]) -> BTreeMap<ComponentId, Pipeline> {
    let mut pipelines = BTreeMap::new();
    for flow in flows {
        let ingest = Pipeline {
            exporters: vec![flow.ingest_exporter()],
            processors: running_on(ingest_processors(plan), flow.signal),
            receivers: vec![ids::otlp()],
        };
        pipelines.insert(ids::ingest_pipeline(flow.signal), ingest);
        let routed = flow.routes.iter();
        pipelines.extend(routed.map(|r| (r.pipeline_id.clone(), r.pipeline.clone())));
    }
    pipelines
}

fn telemetry() -> Value {
    json!({
        "metrics": {
            "level": "normal",
            "readers": [{ "pull": { "exporter": { "prometheus": {
                "host": "0.0.0.0", "port": METRICS_PORT
            }}}}],
        }
    })
}

fn memory_limiter() -> Value {
    json!({
        "check_interval": "1s",
        "limit_percentage": MEMORY_LIMIT_PERCENTAGE,
        "spike_limit_percentage": MEMORY_SPIKE_PERCENTAGE,
    })
}

fn principal() -> Value {
    json!({ "attributes": [
        { "key": "telemux.principal", "from_context": "auth.username", "action": "upsert" }
    ]})
}

/// The identity comes from the credential, never from the client's own attributes; only the
/// platform, trusted to act for tenants, keeps the tenant.id it sent.
fn tenant_id_stamp() -> Value {
    let stamp = format!(
        r#"set(resource.attributes["tenant.id"], resource.attributes["telemux.principal"]) where resource.attributes["telemux.principal"] != "{PLATFORM_USER}""#
    );
    let statements = json!([{ "context": "resource", "statements": [stamp] }]);
    json!({
        "error_mode": "propagate",
        "trace_statements": statements,
        "log_statements": statements,
        "metric_statements": statements,
    })
}

/// Drops every item, by whole resources: the filter of an excluded tenant's pipelines, and of a
/// routed tenant's disabled signals' pipelines, which carry only that tenant's items.
fn drop_everything() -> Value {
    let by_resource = json!([{ "context": "resource", "conditions": ["true"] }]);
    json!({
        "error_mode": "ignore",
        "trace_conditions": by_resource,
        "log_conditions": by_resource,
        "metric_conditions": by_resource,
    })
}

/// Attributes the redaction processor must never touch: routing depends on them.
const PROTECTED_KEYS: [&str; 3] = ["tenant.id", "tenant.tier", "telemux.principal"];

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

fn sampler(percentage: f64) -> Value {
    json!({ "sampling_percentage": percentage })
}

fn tier_stamp(tier: Tier) -> Value {
    json!({ "attributes": [
        { "key": "tenant.tier", "value": tier.as_str(), "action": "upsert" }
    ]})
}

/// A signal's routing connector: each row sends one tenant's (or the platform's own) items to
/// its pipeline; items of a tenant this collector does not route are dropped, unless the
/// platform asked for them.
fn routing(plan: &CollectorPlan, flow: &Flow) -> Value {
    let table: Vec<Value> = flow
        .routes
        .iter()
        .map(|r| json!({ "condition": r.condition, "pipelines": [r.pipeline_id] }))
        .collect();
    let mut routing = json!({ "error_mode": "ignore", "table": table });
    if platform_sink(plan) && plan.unknown_tenant == UnknownTenantPolicy::Platform {
        routing["default_pipelines"] = json!([ids::platform_pipeline(flow.signal)]);
    }
    routing
}

fn tenant_condition(tenant_id: &str) -> String {
    // tenant ids are DNS labels: nothing in them needs quoting in OTTL.
    format!(r#"resource.attributes["tenant.id"] == "{tenant_id}""#)
}

/// The regional copy of every tenant's telemetry. Persistent and batched like the tenants'
/// exporters: a blob per batch, not per request, and a restart loses nothing.
fn blob_exporter(containers: &BlobContainers, secrets_dir: &str, budget: &QueueBudget) -> Value {
    json!({
        "auth": {
            "type": "connection_string",
            "connection_string": secret_file(secrets_dir, BLOB_CONNECTION_STRING_FILE),
        },
        "container": {
            "traces": confmap_escape(&containers.traces),
            "logs": confmap_escape(&containers.logs),
            "metrics": confmap_escape(&containers.metrics),
        },
        "sending_queue": {
            "enabled": true,
            "sizer": "bytes",
            "queue_size": budget.queue_bytes(Tier::Premium),
            "storage": ids::queue_storage(),
            "batch": { "flush_timeout": "5s", "sizer": "bytes", "min_size": budget.batch_bytes, "max_size": budget.batch_bytes },
        },
    })
}

/// A tenant's (or the platform's) App Insights exporter: a persistent queue bounded in bytes by
/// the tier, refusing (not dropping) when full; retried until App Insights answers, with
/// `max_age` (the exporter's default, below Breeze's 48 h) as the only expiry, so that every
/// drop is counted with its reason. With `delivery_report_interval`, the exporter also sends
/// its own counts (the tenant's only) to its own App Insights every interval.
fn appinsights_exporter(
    connection_string: String,
    tier: Tier,
    budget: &QueueBudget,
    delivery_report_interval: Option<&str>,
) -> Value {
    let mut exporter = json!({
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
            "storage": ids::queue_storage(),
            "batch": {
                "flush_timeout": "200ms",
                "sizer": "bytes",
                "min_size": budget.batch_bytes,
                "max_size": budget.batch_bytes,
            },
        },
    });
    if let Some(interval) = delivery_report_interval {
        // A validated Go duration (`deliveryReportInterval`): nothing in it to escape.
        exporter["delivery_report"] = json!({ "interval": interval });
    }
    exporter
}

/// A file of the collector's Secret, read by the collector when it loads the config, so the
/// config itself holds no secret.
fn secret_file(secrets_dir: &str, name: &str) -> String {
    format!("${{file:{secrets_dir}/{name}}}")
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
            delivery_report_interval: None,
        }
    }

    fn exclusion(id: &str, reason: crate::api::reasons::Reason) -> TenantExclusion {
        TenantExclusion {
            tenant_id: id.to_owned(),
            reason: reason.name.to_owned(),
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

    fn containers() -> BlobContainers {
        BlobContainers {
            traces: "traces".to_owned(),
            logs: "logs".to_owned(),
            metrics: "metrics".to_owned(),
        }
    }

    fn rendered(plan: &CollectorPlan) -> Value {
        let yaml = render_collector_config(plan).unwrap().yaml;
        serde_saphyr::from_str(&yaml).unwrap()
    }

    /// The `processors` or `exporters` list of a rendered pipeline; `None` if there is no
    /// such pipeline.
    /// `<signal>/excluded_<id>` runs only `filter`, which drops every item of every signal,
    /// from the signal's router into nop.
    fn assert_drops_into_nop(config: &Value, signal: &str, id: &str, filter: &str) {
        let drop_all = json!([{ "context": "resource", "conditions": ["true"] }]);
        let defined = &config["processors"][filter];
        assert_eq!(defined["error_mode"], "ignore", "{filter}");
        for conditions in ["trace_conditions", "log_conditions", "metric_conditions"] {
            assert_eq!(defined[conditions], drop_all, "{filter} {conditions}");
        }
        let pipeline = format!("{signal}/excluded_{id}");
        assert_eq!(members(config, &pipeline, "processors").unwrap(), [filter]);
        assert_eq!(members(config, &pipeline, "exporters").unwrap(), ["nop"]);
        assert_eq!(
            members(config, &pipeline, "receivers").unwrap(),
            [format!("routing/{signal}")]
        );
    }

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
        plan.blob_containers = Some(containers());
        let config = rendered(&plan);
        for signal in ["traces", "metrics"] {
            let exporters = members(&config, &format!("{signal}/tenant_acme"), "exporters");
            assert_eq!(
                exporters.unwrap(),
                ["telemux_appinsights/tenant_acme", "azure_blob/regional"]
            );
        }
        assert_eq!(members(&config, "logs/tenant_acme", "exporters"), None);
        // Its logs are routed, to be dropped (counted) into nop.
        assert_eq!(
            members(&config, "logs/ingest", "exporters").unwrap(),
            ["routing/logs"]
        );
        assert_drops_into_nop(&config, "logs", "acme", "filter/signal_disabled_acme");
        assert!(
            !config["exporters"]["telemux_appinsights/tenant_acme"].is_null(),
            "still the exporter of its traces and metrics"
        );
    }

    #[test]
    fn with_no_tenant_a_signal_has_no_router_and_ingest_drops_into_nop() {
        let config = rendered(&plan(Vec::new()));
        for signal in ["traces", "logs", "metrics"] {
            assert_eq!(
                members(&config, &format!("{signal}/ingest"), "exporters").unwrap(),
                ["nop"]
            );
            assert!(
                config["connectors"]
                    .get(format!("routing/{signal}"))
                    .is_none()
            );
        }
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

    #[test]
    fn ids_read_as_the_collector_spells_them() {
        assert_eq!(ids::memory_limiter().to_string(), "memory_limiter");
        assert_eq!(
            ids::tenant_redaction("acme").to_string(),
            "redaction/tenant_acme"
        );
        assert_eq!(
            ids::tenant_exporter("acme").to_string(),
            "telemux_appinsights/tenant_acme"
        );
        assert_eq!(
            ids::tenant_pipeline(Signal::Traces, "acme").to_string(),
            "traces/tenant_acme"
        );
        assert_eq!(ids::routing(Signal::Logs).to_string(), "routing/logs");
    }

    #[test]
    fn a_tenants_pipelines_run_its_processors_in_order_and_its_sampler_not_on_metrics() {
        let acme = RoutedTenant {
            blocked_values: vec!["CUST-[0-9]{6}".to_owned()],
            sampling_percentage: Some(50.0),
            ..tenant("acme")
        };
        let mut plan = plan(vec![acme.clone()]);
        plan.blob_containers = Some(containers());
        for signal in Signal::ALL {
            let mut processors = vec![ids::tenant_tier("acme"), ids::tenant_redaction("acme")];
            if signal != Signal::Metrics {
                processors.push(ids::tenant_sampler("acme"));
            }
            let expected = Pipeline {
                exporters: vec![ids::tenant_exporter("acme"), ids::regional_blob()],
                processors,
                receivers: vec![ids::routing(signal)],
            };
            assert_eq!(
                tenant_pipeline(&plan, &acme, signal),
                expected,
                "{signal:?}"
            );
        }
    }

    #[test]
    fn a_tenant_without_redaction_or_sampling_has_only_its_tier_stamp() {
        let globex = tenant("globex");
        let plan = plan(vec![globex.clone()]);
        let defined: Vec<ComponentId> = tenant_processors(&globex)
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(defined, [ids::tenant_tier("globex")]);
        for signal in Signal::ALL {
            let pipeline = tenant_pipeline(&plan, &globex, signal);
            assert_eq!(pipeline.processors, [ids::tenant_tier("globex")]);
            assert_eq!(pipeline.exporters, [ids::tenant_exporter("globex")]);
        }
    }

    #[test]
    fn each_enabled_signal_routes_to_the_tenants_pipeline_and_a_disabled_one_to_its_drop() {
        let acme = RoutedTenant {
            signals: Signals {
                traces: true,
                logs: false,
                metrics: true,
            },
            ..tenant("acme")
        };
        let plan = plan(vec![acme]);
        for signal in Signal::ALL {
            let flow = Flow::of(&plan, signal);
            let routed: Vec<&ComponentId> = flow.routes.iter().map(|r| &r.pipeline_id).collect();
            assert_eq!(flow.ingest_exporter(), ids::routing(signal));
            assert_eq!(flow.routes[0].condition, tenant_condition("acme"));
            if signal == Signal::Logs {
                assert_eq!(routed, [&ids::excluded_pipeline(signal, "acme")]);
                assert_eq!(flow.routes[0].pipeline.exporters, [ids::nop()]);
            } else {
                assert_eq!(routed, [&ids::tenant_pipeline(signal, "acme")]);
                let exporters = &flow.routes[0].pipeline.exporters;
                assert!(exporters.contains(&ids::tenant_exporter("acme")));
            }
        }
    }

    #[test]
    fn a_routed_tenants_disabled_signal_drops_into_nop_through_its_own_filter() {
        let globex = RoutedTenant {
            signals: Signals {
                traces: true,
                logs: false,
                metrics: true,
            },
            sampling_percentage: Some(50.0),
            ..tenant("globex")
        };
        let mut plan = plan(vec![tenant("acme"), globex]);
        plan.blob_containers = Some(containers());
        let config = rendered(&plan);
        assert_drops_into_nop(&config, "logs", "globex", "filter/signal_disabled_globex");
        assert_eq!(members(&config, "logs/tenant_globex", "exporters"), None);
        // Its other signals are delivered as ever, and never through the filter.
        for signal in ["traces", "metrics"] {
            let pipeline = format!("{signal}/tenant_globex");
            let processors = members(&config, &pipeline, "processors").unwrap();
            let expected: &[&str] = if signal == "traces" {
                &[
                    "resource/tenant_globex",
                    "probabilistic_sampler/tenant_globex",
                ]
            } else {
                &["resource/tenant_globex"]
            };
            assert_eq!(processors, expected, "{pipeline}");
            assert_eq!(
                members(&config, &pipeline, "exporters").unwrap(),
                ["telemux_appinsights/tenant_globex", "azure_blob/regional"]
            );
            let excluded = format!("{signal}/excluded_globex");
            assert_eq!(members(&config, &excluded, "exporters"), None);
        }
        // A tenant with every signal on has no such filter nor pipeline.
        assert!(
            config["processors"]
                .get("filter/signal_disabled_acme")
                .is_none()
        );
        for signal in ["traces", "logs", "metrics"] {
            let excluded = format!("{signal}/excluded_acme");
            assert_eq!(members(&config, &excluded, "exporters"), None);
        }
        assert_eq!(config["exporters"]["nop"], json!({}));
    }

    /// The filter of a tenant's disabled signals is defined once, runs on those signals and
    /// no other, and is defined only where some pipeline names it.
    #[test]
    fn a_signal_disabled_filter_is_defined_once_and_named_by_each_disabled_signals_pipeline() {
        for (traces, logs, metrics) in [
            (true, true, true),
            (false, true, true),
            (true, false, false),
            (false, false, true),
            (false, false, false),
        ] {
            let signals = Signals {
                traces,
                logs,
                metrics,
            };
            let acme = RoutedTenant {
                signals: signals.clone(),
                ..tenant("acme")
            };
            let disabled: Vec<Signal> = Signal::ALL
                .into_iter()
                .filter(|s| !s.enabled_for(&acme))
                .collect();
            let filters = signal_disabled_processors(&acme);
            let runs_on: Vec<&Vec<Signal>> = filters.iter().map(|p| &p.runs_on).collect();
            if disabled.is_empty() {
                assert!(runs_on.is_empty(), "{signals:?}");
            } else {
                assert_eq!(runs_on, [&disabled], "{signals:?}");
            }
            let config = rendered(&plan(vec![acme]));
            let filter = "filter/signal_disabled_acme";
            let naming: Vec<&String> = config["service"]["pipelines"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, p)| {
                    p["processors"]
                        .as_array()
                        .is_some_and(|ps| ps.contains(&json!(filter)))
                })
                .map(|(name, _)| name)
                .collect();
            let mut expected: Vec<String> = disabled
                .iter()
                .map(|s| format!("{}/excluded_acme", s.name()))
                .collect();
            expected.sort_unstable();
            assert_eq!(naming, expected.iter().collect::<Vec<_>>(), "{signals:?}");
            assert_eq!(
                config["processors"].get(filter).is_some(),
                !disabled.is_empty(),
                "{signals:?}"
            );
        }
    }

    #[test]
    fn each_excluded_tenant_drops_into_nop_through_its_own_filter_named_by_reason() {
        use crate::api::reasons::{REGION_NOT_ALLOWED, SUSPENDED};
        let mut plan = plan(vec![tenant("acme")]);
        plan.excluded = vec![
            exclusion("paused", SUSPENDED),
            exclusion("us-only", REGION_NOT_ALLOWED),
        ];
        let config = rendered(&plan);
        assert!(
            config["processors"]
                .get("filter/excluded_tenants")
                .is_none()
        );
        for (id, filter) in [
            ("paused", "filter/suspended_paused"),
            ("us-only", "filter/region_not_allowed_us-only"),
        ] {
            for signal in ["traces", "logs", "metrics"] {
                assert_drops_into_nop(&config, signal, id, filter);
                let ingest = members(&config, &format!("{signal}/ingest"), "processors");
                assert_eq!(
                    ingest.unwrap(),
                    [
                        "memory_limiter",
                        "resource/principal",
                        "transform/tenant_id",
                        "redaction/baseline"
                    ]
                );
            }
        }
        assert_eq!(config["exporters"]["nop"], json!({}));
    }

    #[test]
    fn excluded_rows_follow_the_delivering_rows_sorted_and_disjoint_from_them() {
        use crate::api::reasons::{REGION_NOT_ALLOWED, SUSPENDED};
        let no_logs = RoutedTenant {
            signals: Signals {
                traces: true,
                logs: false,
                metrics: true,
            },
            ..tenant("mid")
        };
        let mut plan = plan(vec![tenant("acme"), no_logs, tenant("zeta")]);
        plan.platform = Some(PlatformPlan { has_sink: true });
        plan.excluded = vec![
            exclusion("beta", REGION_NOT_ALLOWED),
            exclusion("paused", SUSPENDED),
        ];
        let config = rendered(&plan);
        let table = config["connectors"]["routing/logs"]["table"]
            .as_array()
            .unwrap();
        let rows: Vec<(&str, &str)> = table
            .iter()
            .map(|row| {
                (
                    row["condition"].as_str().unwrap(),
                    row["pipelines"][0].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    r#"resource.attributes["tenant.id"] == nil"#,
                    "logs/platform"
                ),
                (
                    r#"resource.attributes["tenant.id"] == "acme""#,
                    "logs/tenant_acme"
                ),
                (
                    r#"resource.attributes["tenant.id"] == "zeta""#,
                    "logs/tenant_zeta"
                ),
                (
                    r#"resource.attributes["tenant.id"] == "beta""#,
                    "logs/excluded_beta"
                ),
                (
                    r#"resource.attributes["tenant.id"] == "mid""#,
                    "logs/excluded_mid"
                ),
                (
                    r#"resource.attributes["tenant.id"] == "paused""#,
                    "logs/excluded_paused"
                ),
            ]
        );
        let mut conditions: Vec<&str> = rows.iter().map(|(c, _)| *c).collect();
        conditions.sort_unstable();
        conditions.dedup();
        assert_eq!(conditions.len(), rows.len(), "two rows match alike");
    }

    /// Where a routing connector sends an item of `tenant_id`: the pipelines of the rows that
    /// match it (conditions are `tenant.id` equalities), else its default pipelines.
    fn destinations(config: &Value, signal: &str, tenant_id: &str) -> Vec<String> {
        let Some(routing) = config["connectors"].get(format!("routing/{signal}")) else {
            return Vec::new();
        };
        let condition = tenant_condition(tenant_id);
        let matched: Vec<String> = routing["table"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["condition"] == condition.as_str())
            .flat_map(|row| row["pipelines"].as_array().unwrap().clone())
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        if !matched.is_empty() {
            return matched;
        }
        routing["default_pipelines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    }

    /// With everything a tenant's items could leak to (a platform sink taking unknown tenants,
    /// the regional copy, routed tenants, a signal no routed tenant enables), an excluded
    /// tenant's items of every signal reach nop and no other exporter.
    #[test]
    fn nothing_of_an_excluded_tenant_reaches_an_exporter_but_nop() {
        use crate::api::reasons::{REGION_NOT_ALLOWED, SUSPENDED};
        let acme = RoutedTenant {
            signals: Signals {
                traces: true,
                logs: false,
                metrics: false,
            },
            ..tenant("acme")
        };
        for platform in [None, Some(PlatformPlan { has_sink: true })] {
            let mut plan = plan(vec![acme.clone()]);
            plan.platform = platform;
            plan.unknown_tenant = if plan.platform.is_some() {
                UnknownTenantPolicy::Platform
            } else {
                UnknownTenantPolicy::Drop
            };
            plan.blob_containers = Some(containers());
            plan.excluded = vec![
                exclusion("paused", SUSPENDED),
                exclusion("us-only", REGION_NOT_ALLOWED),
            ];
            let config = rendered(&plan);
            for excluded in ["paused", "us-only"] {
                for signal in ["traces", "logs", "metrics"] {
                    let pipelines = destinations(&config, signal, excluded);
                    assert_eq!(pipelines, [format!("{signal}/excluded_{excluded}")]);
                    for pipeline in &pipelines {
                        let exporters = members(&config, pipeline, "exporters").unwrap();
                        assert_eq!(exporters, ["nop"], "{pipeline}");
                    }
                }
            }
            // The ingest stage no longer drops them: it hands every item to the router.
            for signal in ["traces", "logs", "metrics"] {
                let ingest = members(&config, &format!("{signal}/ingest"), "exporters");
                assert_eq!(ingest.unwrap(), [format!("routing/{signal}")]);
            }
        }
    }

    /// The same for a routed tenant's disabled signals: with a platform sink taking unknown
    /// tenants, the regional copy and other tenants delivering the signal, what the tenant
    /// sends of a signal it disables reaches nop and no other exporter (neither the platform's
    /// App Insights nor its own), while its enabled signals still reach its own.
    #[test]
    fn nothing_of_a_tenants_disabled_signal_reaches_an_exporter_but_nop() {
        let globex = RoutedTenant {
            signals: Signals {
                traces: true,
                logs: false,
                metrics: false,
            },
            ..tenant("globex")
        };
        for platform in [None, Some(PlatformPlan { has_sink: true })] {
            let mut plan = plan(vec![tenant("acme"), globex.clone()]);
            plan.platform = platform;
            plan.unknown_tenant = if plan.platform.is_some() {
                UnknownTenantPolicy::Platform
            } else {
                UnknownTenantPolicy::Drop
            };
            plan.blob_containers = Some(containers());
            let config = rendered(&plan);
            for signal in ["logs", "metrics"] {
                let pipelines = destinations(&config, signal, "globex");
                assert_eq!(pipelines, [format!("{signal}/excluded_globex")]);
                for pipeline in &pipelines {
                    let processors = members(&config, pipeline, "processors").unwrap();
                    assert_eq!(processors, ["filter/signal_disabled_globex"], "{pipeline}");
                    let exporters = members(&config, pipeline, "exporters").unwrap();
                    assert_eq!(exporters, ["nop"], "{pipeline}");
                }
            }
            assert_eq!(
                destinations(&config, "traces", "globex"),
                ["traces/tenant_globex"]
            );
            // Only an id no row names goes to the default pipelines.
            let unknown = destinations(&config, "logs", "initech");
            let expected: &[&str] = if plan.platform.is_some() {
                &["logs/platform"]
            } else {
                &[]
            };
            assert_eq!(unknown, expected);
        }
    }

    #[test]
    fn a_delivery_report_only_in_the_exporters_of_tenants_that_asked_for_one() {
        let acme = RoutedTenant {
            delivery_report_interval: Some("15m".to_owned()),
            ..tenant("acme")
        };
        let mut plan = plan(vec![acme, tenant("globex")]);
        plan.platform = Some(PlatformPlan { has_sink: true });
        plan.blob_containers = Some(containers());
        let config = rendered(&plan);
        let exporters = config["exporters"].as_object().unwrap();
        assert_eq!(
            exporters["telemux_appinsights/tenant_acme"]["delivery_report"],
            json!({ "interval": "15m" })
        );
        let with_report: Vec<&String> = exporters
            .iter()
            .filter(|(_, e)| e.get("delivery_report").is_some())
            .map(|(id, _)| id)
            .collect();
        assert_eq!(with_report, ["telemux_appinsights/tenant_acme"]);
    }

    #[test]
    fn component_ids_read_back_as_the_tenant_they_were_made_for() {
        use crate::api::reasons::{REGION_NOT_ALLOWED, SIGNAL_DISABLED, SUSPENDED};
        use component_ids::{
            exclusion_filter_tenant, exporter_tenant, sampler_tenant, tier_stamp_tenant,
        };
        let longest = "x".repeat(63);
        for id in [
            "a",
            "acme",
            "us-only",
            "0x1",
            "tenant",
            "suspended",
            &longest,
        ] {
            let stamp = ids::tenant_tier(id).to_string();
            assert_eq!(tier_stamp_tenant(&stamp), Some(id), "{stamp}");
            let exporter = ids::tenant_exporter(id).to_string();
            assert_eq!(exporter_tenant(&exporter), Some(id), "{exporter}");
            let sampler = ids::tenant_sampler(id).to_string();
            assert_eq!(sampler_tenant(&sampler), Some(id), "{sampler}");
            assert_eq!(tier_stamp_tenant(&sampler), None);
            let filter = ids::signal_disabled_filter(id).to_string();
            assert_eq!(
                exclusion_filter_tenant(&filter),
                Some((id, SIGNAL_DISABLED)),
                "{filter}"
            );
            for reason in [SUSPENDED, REGION_NOT_ALLOWED, SIGNAL_DISABLED] {
                let filter = ids::exclusion_filter(reason.name, id).to_string();
                assert_eq!(
                    exclusion_filter_tenant(&filter),
                    Some((id, reason)),
                    "{filter}"
                );
            }
        }
        assert_eq!(
            ids::exclusion_filter(SUSPENDED.name, "acme").to_string(),
            "filter/suspended_acme"
        );
        assert_eq!(
            ids::exclusion_filter(REGION_NOT_ALLOWED.name, "acme").to_string(),
            "filter/region_not_allowed_acme"
        );
        assert_eq!(
            ids::signal_disabled_filter("acme").to_string(),
            "filter/signal_disabled_acme"
        );
        assert_eq!(
            exclusion_filter_tenant("filter/signal_disabled_acme"),
            Some(("acme", SIGNAL_DISABLED))
        );
        assert_eq!(
            ids::excluded_pipeline(Signal::Metrics, "acme").to_string(),
            "metrics/excluded_acme"
        );
        // Every other component of a rendered config reads as no tenant.
        for other in [
            "resource/principal",
            "transform/tenant_id",
            "redaction/tenant_acme",
            "probabilistic_sampler/tenant_acme",
            "resource/tenant_",
            "resource/tenant_Acme",
            "resource/tenant_acme/x",
            "resourcex/tenant_acme",
            "resource",
            "telemux_appinsights/platform",
            "azure_blob/regional",
            "nop",
        ] {
            assert_eq!(tier_stamp_tenant(other), None, "{other}");
            assert_eq!(exporter_tenant(other), None, "{other}");
            assert_eq!(exclusion_filter_tenant(other), None, "{other}");
        }
        for other in [
            "filter/excluded_tenants",
            "filter/suspended_",
            "filter/suspended",
            "filter/suspendedacme",
            "filter/signal_disabled_",
            "filter/signal_disabled",
            "filter/signal_disabledacme",
            "filter/signal_acme",
            "filter/ready_acme",
            "filter/region_not_allowed_Bad",
            "filter/tenant_acme",
            "transform/suspended_acme",
        ] {
            assert_eq!(exclusion_filter_tenant(other), None, "{other}");
        }
    }
}
