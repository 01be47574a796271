//! Objects owned by a RegionalCollector: its config (ConfigMap), its secret material (Secret),
//! its platform credential, the collector StatefulSet and its Service.
//!
//! A StatefulSet, not a Deployment: each collector pod keeps its exporters' queues on a volume
//! claim of its own, which the pod that replaces it in a rollout (same ordinal) mounts again,
//! so a rollout while a tenant's App Insights is down loses nothing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_SECRET_HASH, LABEL_COLLECTOR, LABEL_COMPONENT,
    LABEL_INSTANCE, LABEL_NAME, LABEL_REGION, LABEL_SHARD, labels, owner_reference,
};
use crate::api::RegionalCollector;
use crate::layout::{
    CONFIG_DIR, CONFIG_FILE, HEALTH_PORT, METRICS_PORT, PLATFORM_USER, QUEUE_DIR, SECRETS_DIR,
};
use crate::pipeline::RenderedConfig;
use crate::pipeline::render::hex_sha256;

/// Keys of the platform credential Secret (same shape as a tenant's).
pub use super::tenant::{BCRYPT_KEY, PASSWORD_KEY, USERNAME_KEY};

/// The volume (claim template) of the exporters' persistent queues.
pub const QUEUE_VOLUME: &str = "queue";

/// User id the collector runs as (telemux's collector image, like the upstream ones).
const COLLECTOR_UID: i64 = 10001;

/// A shard's index: shard 0 keeps the names an unsharded collector had, so its tenants'
/// endpoint (the Service) never changes; shard `n` adds `-n`.
pub type ShardIndex = crate::pipeline::shards::ShardIndex;

fn shard_suffix(shard: ShardIndex) -> String {
    if shard == 0 {
        String::new()
    } else {
        format!("-{shard}")
    }
}

/// The shard's StatefulSet, and its Service (the tenants' endpoint).
pub fn workload_name(collector: &RegionalCollector, shard: ShardIndex) -> String {
    format!("{}-collector{}", collector.name_any(), shard_suffix(shard))
}

pub fn config_map_name(collector: &RegionalCollector, shard: ShardIndex) -> String {
    format!("{}-config", workload_name(collector, shard))
}

pub fn secret_name(collector: &RegionalCollector, shard: ShardIndex) -> String {
    format!("{}-secrets", workload_name(collector, shard))
}

/// The record of the tenants assigned to a shard (`shard_record`).
pub fn shard_record_name(collector: &RegionalCollector, shard: ShardIndex) -> String {
    format!("{}-tenants", workload_name(collector, shard))
}

/// `app.kubernetes.io/component` of shard records, which telemux watches apart from the
/// (large) configurations.
pub const SHARD_RECORD_COMPONENT: &str = "shard-tenants";

pub fn platform_credentials_secret_name(collector: &RegionalCollector) -> String {
    format!("{}-platform-credentials", collector.name_any())
}

/// The in-cluster address of a shard's Service.
pub fn service_host(collector: &RegionalCollector, shard: ShardIndex) -> String {
    format!(
        "{}.{}.svc",
        workload_name(collector, shard),
        collector.namespace().unwrap_or_default()
    )
}

fn selector_labels(collector: &RegionalCollector, shard: ShardIndex) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "telemux-collector".to_owned()),
        (LABEL_INSTANCE.to_owned(), collector.name_any()),
        (LABEL_SHARD.to_owned(), shard.to_string()),
    ])
}

/// The shard a child object of a collector belongs to, from its label.
pub fn shard_of(labels: &BTreeMap<String, String>) -> Option<ShardIndex> {
    labels.get(LABEL_SHARD)?.parse().ok()
}

fn meta(
    collector: &RegionalCollector,
    shard: Option<ShardIndex>,
    name: String,
    component: &str,
) -> ObjectMeta {
    let name_label = collector.name_any();
    let shard_label = shard.map(|s| s.to_string());
    let mut pairs = vec![
        (LABEL_NAME, "telemux-collector"),
        (LABEL_INSTANCE, name_label.as_str()),
        (LABEL_COMPONENT, component),
        (LABEL_COLLECTOR, name_label.as_str()),
        (LABEL_REGION, collector.spec.region.as_str()),
    ];
    if let Some(shard) = &shard_label {
        pairs.push((LABEL_SHARD, shard.as_str()));
    }
    ObjectMeta {
        name: Some(name),
        namespace: collector.namespace(),
        labels: Some(labels(&pairs)),
        owner_references: owner_reference(collector).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The collector configuration: no secret material, only `${file:...}` references to the
/// mounted Secret.
pub fn config_map(
    collector: &RegionalCollector,
    shard: ShardIndex,
    rendered: &RenderedConfig,
) -> ConfigMap {
    let name = config_map_name(collector, shard);
    ConfigMap {
        metadata: meta(collector, Some(shard), name, "collector-config"),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            rendered.yaml.clone(),
        )])),
        ..ConfigMap::default()
    }
}

/// The durable record of the tenants assigned to a shard: one key per TelemetryTenant name
/// (always a valid key), so a tenant's shard is one lookup. Apart from the shard's
/// configuration: tenants are recorded before their shard serves them, and stay recorded
/// while its configuration is refused or they are not served for a while, so no restart and
/// no lost status can move them.
pub fn shard_record(
    collector: &RegionalCollector,
    shard: ShardIndex,
    tenants: &BTreeSet<String>,
) -> ConfigMap {
    let name = shard_record_name(collector, shard);
    ConfigMap {
        metadata: meta(collector, Some(shard), name, SHARD_RECORD_COMPONENT),
        data: Some(tenants.iter().map(|t| (t.clone(), String::new())).collect()),
        ..ConfigMap::default()
    }
}

/// The shard of each tenant of `collector` (by TelemetryTenant name), from the records of
/// its namespace. Should a tenant appear in two records (a record edited by hand), the
/// lower shard wins, the same on every read.
pub fn recorded_shards<'a>(
    records: impl IntoIterator<Item = &'a ConfigMap>,
    collector: &str,
) -> BTreeMap<String, ShardIndex> {
    let mut shards = BTreeMap::new();
    for (shard, record) in records_of(records, collector) {
        for tenant in record.data.iter().flatten().map(|(k, _)| k) {
            let entry = shards.entry(tenant.clone()).or_insert(shard);
            *entry = (*entry).min(shard);
        }
    }
    shards
}

/// The tenants each of `collector`'s shard records lists, by shard.
pub fn shard_record_contents<'a>(
    records: impl IntoIterator<Item = &'a ConfigMap>,
    collector: &str,
) -> BTreeMap<ShardIndex, BTreeSet<String>> {
    records_of(records, collector)
        .map(|(shard, record)| {
            let tenants = record.data.iter().flatten().map(|(k, _)| k.clone());
            (shard, tenants.collect())
        })
        .collect()
}

/// The shard `tenant` is recorded on for `collector`, if any (the lowest, as above).
pub fn recorded_shard<'a>(
    records: impl IntoIterator<Item = &'a ConfigMap>,
    collector: &str,
    tenant: &str,
) -> Option<ShardIndex> {
    records_of(records, collector)
        .filter(|(_, record)| record.data.as_ref().is_some_and(|d| d.contains_key(tenant)))
        .map(|(shard, _)| shard)
        .min()
}

fn records_of<'a>(
    records: impl IntoIterator<Item = &'a ConfigMap>,
    collector: &str,
) -> impl Iterator<Item = (ShardIndex, &'a ConfigMap)> {
    records.into_iter().filter_map(move |record| {
        let labels = record.labels();
        let ours = labels.get(LABEL_COMPONENT).map(String::as_str) == Some(SHARD_RECORD_COMPONENT)
            && labels.get(LABEL_COLLECTOR).map(String::as_str) == Some(collector);
        Some((shard_of(labels).filter(|_| ours)?, record))
    })
}

/// htpasswd and connection strings, mounted as files.
pub fn secret(
    collector: &RegionalCollector,
    shard: ShardIndex,
    files: &BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: meta(
            collector,
            Some(shard),
            secret_name(collector, shard),
            "collector-secrets",
        ),
        type_: Some("Opaque".into()),
        data: Some(
            files
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// SHA-256 over the Secret's files, for the pod-template annotation.
pub fn secret_hash(files: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (name, content) in files {
        for part in [name.as_bytes(), content.as_bytes()] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    hex_sha256(&bytes)
}

/// The credential the platform's services send with (`_platform` user).
pub fn platform_credentials_secret(
    collector: &RegionalCollector,
    password: &str,
    bcrypt_hash: &str,
) -> Secret {
    Secret {
        metadata: meta(
            collector,
            None,
            platform_credentials_secret_name(collector),
            "platform-credentials",
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                USERNAME_KEY.to_owned(),
                ByteString(PLATFORM_USER.as_bytes().to_vec()),
            ),
            (
                PASSWORD_KEY.to_owned(),
                ByteString(password.as_bytes().to_vec()),
            ),
            (
                BCRYPT_KEY.to_owned(),
                ByteString(bcrypt_hash.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("200m".into())),
            ("memory".to_owned(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("1Gi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn tcp_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The collector StatefulSet. The pod template carries the hashes of config and Secret: a change
/// of either rolls the pods, and no change leaves the template, and so the pods, alone.
/// `default_image` runs the pods when the spec names no `image` (the operator's
/// `--collector-image`, by default [`crate::api::collector::DEFAULT_COLLECTOR_IMAGE`]).
pub fn stateful_set(
    collector: &RegionalCollector,
    shard: ShardIndex,
    config_hash: &str,
    secret_hash: &str,
    default_image: &str,
) -> StatefulSet {
    let spec = &collector.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(selector_labels(collector, shard));
    let mut pod_annotations = overrides.annotations.clone();
    pod_annotations.insert(ANNOTATION_CONFIG_HASH.into(), config_hash.into());
    pod_annotations.insert(ANNOTATION_SECRET_HASH.into(), secret_hash.into());
    let health_probe = |period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/".into()),
            port: IntOrString::Int(HEALTH_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let container = Container {
        name: "otelcol".into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(vec![
            tcp_port("otlp-grpc", spec.ports.grpc),
            tcp_port("otlp-http", spec.ports.http),
            tcp_port("health", HEALTH_PORT),
            tcp_port("metrics", METRICS_PORT),
        ]),
        readiness_probe: Some(health_probe(5)),
        liveness_probe: Some(health_probe(15)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "secrets".into(),
                mount_path: SECRETS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: QUEUE_VOLUME.into(),
                mount_path: QUEUE_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: meta(
            collector,
            Some(shard),
            workload_name(collector, shard),
            "collector",
        ),
        spec: Some(StatefulSetSpec {
            // An autoscaled shard's size is its HorizontalPodAutoscaler's: left out, so the
            // apply neither owns nor resets it.
            replicas: spec.autoscaling.is_none().then_some(spec.replicas),
            // Collector pods are interchangeable behind the Service: start and stop them all at
            // once; rollouts still replace one at a time.
            pod_management_policy: Some("Parallel".into()),
            // Required by the API; the pods need no DNS names of their own.
            service_name: Some(workload_name(collector, shard)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(collector, shard)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The collector never talks to the API server.
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(COLLECTOR_UID),
                        run_as_group: Some(COLLECTOR_UID),
                        // The queue volume is writable by the collector's group.
                        fs_group: Some(COLLECTOR_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    // Time to finish the requests in flight and close the queues cleanly.
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then_some(overrides.node_selector),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then_some(overrides.tolerations),
                    priority_class_name: overrides.priority_class_name,
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config_map_name(collector, shard),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "secrets".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(secret_name(collector, shard)),
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![queue_claim_template(collector, shard)]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    // Deleting the collector deletes its queues; scaling down keeps a removed
                    // pod's queue for when it is scaled up again, to deliver what it holds.
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Seconds a stopping collector pod gets before it is killed.
const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The claim each collector pod gets for its queues (`queue-<workload>-<ordinal>`).
fn queue_claim_template(collector: &RegionalCollector, shard: ShardIndex) -> PersistentVolumeClaim {
    let volume = &collector.spec.queue_volume;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(QUEUE_VOLUME.into()),
            labels: Some(selector_labels(collector, shard)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    volume.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The shard's endpoint: OTLP (gRPC and HTTP) and the collector's own metrics.
pub fn service(collector: &RegionalCollector, shard: ShardIndex) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(
            collector,
            Some(shard),
            workload_name(collector, shard),
            "collector",
        ),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(collector, shard)),
            ports: Some(vec![
                port("otlp-grpc", collector.spec.ports.grpc),
                port("otlp-http", collector.spec.ports.http),
                port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The shard's HorizontalPodAutoscaler, when the collector asks for one.
pub fn horizontal_pod_autoscaler(
    collector: &RegionalCollector,
    shard: ShardIndex,
) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = collector.spec.autoscaling.as_ref()?;
    let utilization = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics = vec![utilization("cpu", autoscaling.target_cpu_utilization)];
    if let Some(memory) = autoscaling.target_memory_utilization {
        metrics.push(utilization("memory", memory));
    }
    Some(HorizontalPodAutoscaler {
        metadata: meta(
            collector,
            Some(shard),
            workload_name(collector, shard),
            "collector",
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "StatefulSet".into(),
                name: workload_name(collector, shard),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

/// At most one pod of a shard is evicted at a time (node drains), so a shard with several
/// replicas keeps serving its tenants through a drain.
pub fn pod_disruption_budget(
    collector: &RegionalCollector,
    shard: ShardIndex,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(
            collector,
            Some(shard),
            workload_name(collector, shard),
            "collector",
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(collector, shard)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::api::RegionalCollector;

    fn image_of(collector: &RegionalCollector, default_image: &str) -> String {
        let set = super::stateful_set(collector, 0, "config", "secret", default_image);
        let pod = set.spec.unwrap().template.spec.unwrap();
        pod.containers[0].image.clone().unwrap()
    }

    fn collector(name: &str) -> RegionalCollector {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "telemux.io/v1alpha1",
            "kind": "RegionalCollector",
            "metadata": { "name": name, "namespace": "tenants" },
            "spec": { "region": "westeurope" },
        }))
        .unwrap()
    }

    fn tenants(names: &[&str]) -> std::collections::BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_tenants_shard_is_read_back_from_its_collectors_records_only() {
        let (eu, us) = (collector("eu"), collector("us"));
        let records = [
            super::shard_record(&eu, 0, &tenants(&["acme", "globex"])),
            super::shard_record(&eu, 3, &tenants(&["initech"])),
            super::shard_record(&us, 1, &tenants(&["acme"])),
        ];
        assert_eq!(
            records[1].metadata.name.as_deref(),
            Some("eu-collector-3-tenants")
        );
        let eu_shards = super::recorded_shards(&records, "eu");
        assert_eq!(eu_shards.len(), 3);
        assert_eq!(eu_shards["initech"], 3);
        assert_eq!(super::recorded_shard(&records, "eu", "acme"), Some(0));
        assert_eq!(super::recorded_shard(&records, "us", "acme"), Some(1));
        assert_eq!(super::recorded_shard(&records, "us", "globex"), None);
        let contents = super::shard_record_contents(&records, "eu");
        assert_eq!(contents[&0], tenants(&["acme", "globex"]));
    }

    #[test]
    fn a_tenant_in_two_records_reads_as_the_lower_shard_everywhere() {
        let eu = collector("eu");
        let records = [
            super::shard_record(&eu, 2, &tenants(&["acme"])),
            super::shard_record(&eu, 1, &tenants(&["acme"])),
        ];
        assert_eq!(super::recorded_shards(&records, "eu")["acme"], 1);
        assert_eq!(super::recorded_shard(&records, "eu", "acme"), Some(1));
    }

    #[test]
    fn the_spec_image_wins_over_the_operator_default() {
        let mut collector: RegionalCollector = serde_json::from_value(serde_json::json!({
            "apiVersion": "telemux.io/v1alpha1",
            "kind": "RegionalCollector",
            "metadata": { "name": "westeurope", "namespace": "tenants" },
            "spec": { "region": "westeurope" },
        }))
        .unwrap();
        assert_eq!(
            image_of(&collector, "registry.example/telemux-otelcol:1"),
            "registry.example/telemux-otelcol:1"
        );
        collector.spec.image = Some("registry.example/custom-otelcol:2".into());
        assert_eq!(
            image_of(&collector, "registry.example/telemux-otelcol:1"),
            "registry.example/custom-otelcol:2"
        );
    }
}
