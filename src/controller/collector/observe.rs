//! Everything the collector reconcile reads, in one place, into plain data.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::{Api, ResourceExt};

use crate::api::{RegionalCollector, SecretKeyRef};
use crate::controller::io::{read_secret, read_user_secret_key, secret_value};
use crate::controller::tenant::observe::StoredCredential;
use crate::controller::{Context, Result};
use crate::pipeline::TenantSource;
use crate::pipeline::shards::ShardIndex;
use crate::resources::LABEL_COLLECTOR;
use crate::resources::collector as desired;
use crate::resources::tenant::{
    BCRYPT_KEY, CONNECTION_STRING_KEY, PASSWORD_KEY, connection_string_secret_name,
    credentials_secret_name,
};

/// What the collector reconcile knows before it decides.
#[derive(Debug, Clone)]
pub struct ObservedCollector {
    /// The platform credential as stored, when `spec.platform` asks for one (read from the
    /// API: a lagging cache must never cause a re-issue).
    pub platform_credential: Option<StoredCredential>,
    /// The user Secrets the spec names (API reads); `None` when missing.
    pub blob_connection_string: Option<String>,
    pub platform_connection_string: Option<String>,
    /// The namespace's tenants not being deleted, with their telemux Secrets (watch caches).
    pub tenants: Vec<TenantSource>,
    /// The shards recorded for tenants (by TelemetryTenant name), from the shard records.
    pub recorded_shards: BTreeMap<String, ShardIndex>,
    /// The collector's current StatefulSets, by shard.
    pub live: BTreeMap<ShardIndex, StatefulSet>,
    /// The shards that have a HorizontalPodAutoscaler.
    pub autoscaled: BTreeSet<ShardIndex>,
}

pub async fn observe(collector: &RegionalCollector, ctx: &Context) -> Result<ObservedCollector> {
    let namespace = collector.namespace().unwrap_or_default();
    let spec = &collector.spec;
    let platform_credential = match &spec.platform {
        Some(_) => {
            let name = desired::platform_credentials_secret_name(collector);
            let stored = read_secret(&ctx.client, &namespace, &name).await?;
            let value = |key| stored.as_ref().and_then(|s| secret_value(s, key));
            Some(StoredCredential {
                user: None,
                password: value(PASSWORD_KEY),
                hash: value(BCRYPT_KEY),
            })
        }
        None => None,
    };
    let blob = spec
        .regional_storage
        .as_ref()
        .map(|s| &s.azure_blob.connection_string_secret_ref);
    let platform_ai = spec
        .platform
        .as_ref()
        .and_then(|p| p.application_insights.as_ref());
    let of_collector =
        ListParams::default().labels(&format!("{LABEL_COLLECTOR}={}", collector.name_any()));
    let live = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .list(&of_collector)
        .await?
        .items
        .into_iter()
        .filter_map(|s| Some((desired::shard_of(s.labels())?, s)))
        .collect();
    let autoscaled = Api::<PartialObjectMeta<HorizontalPodAutoscaler>>::namespaced(
        ctx.client.clone(),
        &namespace,
    )
    .list_metadata(&of_collector)
    .await?
    .items
    .iter()
    .filter_map(|h| desired::shard_of(h.labels()))
    .collect();
    Ok(ObservedCollector {
        platform_credential,
        blob_connection_string: user_secret(ctx, &namespace, blob).await?,
        platform_connection_string: user_secret(
            ctx,
            &namespace,
            platform_ai.map(|ai| &ai.connection_string_secret_ref),
        )
        .await?,
        tenants: tenants(ctx, &namespace),
        recorded_shards: recorded_shards(ctx, collector, &namespace),
        live,
        autoscaled,
    })
}

async fn user_secret(
    ctx: &Context,
    namespace: &str,
    reference: Option<&SecretKeyRef>,
) -> Result<Option<String>> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    Ok(
        read_user_secret_key(ctx, namespace, &reference.name, &reference.key)
            .await?
            .found(),
    )
}

/// Each tenant's recorded shard of this collector, from the shard records.
fn recorded_shards(
    ctx: &Context,
    collector: &RegionalCollector,
    namespace: &str,
) -> BTreeMap<String, ShardIndex> {
    let records = ctx.shard_records.state();
    let of_namespace = records
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace))
        .map(|r| &**r);
    desired::recorded_shards(of_namespace, &collector.name_any())
}

/// The namespace's tenants from the watch cache, with their Secrets from the managed cache.
fn tenants(ctx: &Context, namespace: &str) -> Vec<TenantSource> {
    ctx.tenants
        .state()
        .into_iter()
        .filter(|t| {
            t.namespace().as_deref() == Some(namespace) && t.metadata.deletion_timestamp.is_none()
        })
        .map(|t| TenantSource {
            name: t.name_any(),
            created: t.metadata.creation_timestamp.clone(),
            labels: t.labels().clone(),
            spec: t.spec.clone(),
            password_hash: ctx.managed_secret_value(
                namespace,
                &credentials_secret_name(&t),
                BCRYPT_KEY,
            ),
            connection_string: ctx.managed_secret_value(
                namespace,
                &connection_string_secret_name(&t),
                CONNECTION_STRING_KEY,
            ),
        })
        .collect()
}
